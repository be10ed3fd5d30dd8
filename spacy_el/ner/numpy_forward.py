"""The tagger's BiLSTM and character CNN forward passes in numpy, from the weights of the
PyTorch modules that train them (`torch.nn.LSTM`, `Embedding` + `Conv1d`), by their state-dict
names: prediction needs no torch, and gives torch's scores up to float rounding."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np


def packing(lengths: Sequence[int], reverse: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How to read the concatenated tokens of docs of `lengths` time step by time step, as a
    packed batch: `order` lists the rows step by step (at each step the docs still running,
    longest first: always a prefix of the same doc order), `batch_sizes` counts those docs per
    step, and `restore` is the inverse of `order`. With `reverse`, step t reads each doc's
    t-th token from its end (the backward direction).

    Packing straight from the concatenation skips the padded (max length × batch × width) copy
    and its two transposes, which cost more than the LSTM itself on batches of short sentences."""
    lengths = np.asarray(lengths, dtype="int64")
    rank = np.empty_like(lengths)
    rank[np.argsort(-lengths, kind="stable")] = np.arange(len(lengths))
    starts = np.cumsum(lengths) - lengths
    position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    step = np.repeat(lengths, lengths) - 1 - position if reverse else position
    order = np.lexsort((np.repeat(rank, lengths), step))
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return order, np.bincount(step), restore


def _fused_weights(state: Dict[str, np.ndarray], prefix: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input weights (nI, 8H) and biases (8H,) of both directions side by side, and the
    recurrent weights (2, H, 4H), with the gates reordered from torch's i, f, g, o to i, f, o, g
    and the sigmoid gates' rows halved: sigmoid(x) = (tanh(x / 2) + 1) / 2, so one tanh call
    serves all four gates. The recurrent weights are halved once more: the loop keeps each
    state doubled, which saves it a pass per step."""
    W_ih, W_hh, bias = [], [], []
    for suffix in ("", "_reverse"):
        w_ih = state[f"{prefix}weight_ih_l0{suffix}"]
        w_hh = state[f"{prefix}weight_hh_l0{suffix}"]
        b = state[f"{prefix}bias_ih_l0{suffix}"] + state[f"{prefix}bias_hh_l0{suffix}"]
        H = w_hh.shape[1]
        rows = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]  # i, f, o, g
        scale = np.r_[np.full(3 * H, 0.5, "f"), np.ones(H, "f")]
        W_ih.append(w_ih[rows] * scale[:, None])
        W_hh.append((w_hh[rows] * (0.5 * scale[:, None])).T)  # the loop keeps 2 h
        bias.append(b[rows] * scale)
    return (np.ascontiguousarray(np.concatenate(W_ih).T, dtype="f"), np.concatenate(bias).astype("f"),
            np.ascontiguousarray(np.stack(W_hh), dtype="f"))


def bilstm(state: Dict[str, np.ndarray], Xs: List[np.ndarray], prefix: str = "lstm.") -> List[np.ndarray]:
    """One bidirectional LSTM layer (`torch.nn.LSTM(nI, H, bidirectional=True)` weights under
    `prefix`) over each doc's (n, nI) rows: (n, 2H) per doc, forward then backward states, as
    the packed torch module gives. All docs advance together, both directions in each step."""
    lengths = [len(X) for X in Xs]
    W_ih, bias, W_hh = _fused_weights(state, prefix)
    H = W_hh.shape[1]
    if not sum(lengths):
        return [np.zeros((0, 2 * H), "f") for _ in Xs]
    X = np.concatenate([np.asarray(x, dtype="f") for x in Xs])
    N = len(X)
    forward_order, batch_sizes, forward_restore = packing(lengths)
    backward_order, _, backward_restore = packing(lengths, reverse=True)
    # Both directions' input projections, each in its own packed order: step t's rows are
    # gates[:, start:start + B], contiguous per direction.
    gates = np.empty((2, N, 4 * H), "f")
    np.matmul(X[forward_order], W_ih[:, :4 * H], out=gates[0])
    np.matmul(X[backward_order], W_ih[:, 4 * H:], out=gates[1])
    gates += bias.reshape(2, 1, 4 * H)
    out = np.empty((2, N, H), "f")
    B0 = int(batch_sizes[0])
    cell = np.zeros((2, B0, H), "f")
    recurrent = np.empty((2, B0, 4 * H), "f")
    product = np.empty((2, B0, H), "f")
    start = prev = 0
    # Each ufunc writes to an array none of its inputs views: numpy copies an input that may
    # overlap its output, and the gates are slices of one array.
    for B in batch_sizes.tolist():
        z = gates[:, start:start + B]
        if start:
            np.matmul(out[:, prev:prev + B], W_hh, out=recurrent[:, :B])  # both directions' products
            z += recurrent[:, :B]
        np.tanh(z, out=z)
        u = z[:, :, :3 * H]
        u += 1.0  # i, f, o gates, doubled: (tanh(x / 2) + 1) = 2 sigmoid(x)
        c, p = cell[:, :B], product[:, :B]
        c *= z[:, :, H:2 * H]  # 2 f · c
        np.multiply(z[:, :, :H], z[:, :, 3 * H:], out=p)  # 2 i · g
        c += p
        c *= 0.5
        h = out[:, start:start + B]  # 2 h: the recurrent weights are halved to read it
        np.tanh(c, out=h)
        h *= z[:, :, 2 * H:3 * H]
        prev, start = start, start + B
    Y = np.empty((N, 2 * H), "f")
    Y[:, :H] = out[0][forward_restore]
    Y[:, H:] = out[1][backward_restore]
    Y *= 0.5
    return np.split(Y, np.cumsum(lengths)[:-1])


def char_cnn(state: Dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The character CNN (`embed.weight` (257, E), `conv.weight` (width, E, window), `conv.bias`)
    over byte ids (tokens, length), 0 padding: (tokens, width) = tanh(max over each token's
    bytes of the convolution). Embedding then convolving is linear, so each window offset k is
    one premultiplied (257, width) table `E · W_kᵀ` and a position's value a sum of gathered rows;
    distinct tokens are computed once."""
    E, W, b = state["embed.weight"], state["conv.weight"], state["conv.bias"]
    width, _, window = W.shape
    ids = np.asarray(ids)
    if not len(ids):
        return np.zeros((0, width), "f")
    keys = np.ascontiguousarray(ids, dtype=np.uint16 if ids.max() < 65536 else ids.dtype)
    rows = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    unique = ids[first].astype("int64")
    n, length = unique.shape
    pad = window // 2
    # a zero row (index 257) for the convolution's zero padding beyond the window
    tables = [np.vstack([E @ W[:, :, k].T, np.zeros((1, width))]).astype("f") for k in range(window)]
    padded = np.full((n, length + 2 * pad), len(E), dtype="int64")
    padded[:, pad:pad + length] = unique
    h = np.broadcast_to(b.astype("f"), (n, length, width)).copy()
    for k in range(window):
        h += tables[k][padded[:, k:k + length]]
    h[unique == 0] = -1e4
    return np.tanh(h.max(axis=1))[inverse.reshape(-1)]
