"""The BiLSTM layer packs docs straight from their rows: same outputs and gradients as the
LSTM run on each doc alone, empty docs included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from spacy_el.ner.model import PackedBiLSTM, packing


def test_packing_matches_torch_pack_sequence():
    lengths = [3, 0, 5, 1, 5, 2]
    rows = np.arange(sum(lengths))
    docs = np.split(rows, np.cumsum(lengths)[:-1])
    order, batch_sizes, restore = packing(lengths)
    by_length = sorted((d for d in docs if len(d)), key=len, reverse=True)
    expected = pack_sequence([torch.as_tensor(d) for d in by_length])
    assert batch_sizes.tolist() == expected.batch_sizes.tolist()
    assert sorted(rows[order][:batch_sizes[0]].tolist()) == sorted(d[0] for d in by_length)
    assert (rows[order][restore] == rows).all()
    # Within each step, the rows are those of the longest docs first, in the same doc order.
    step_docs = [[int(np.searchsorted(np.cumsum(lengths), r, side="right")) for r in rows[order][a:b]]
                 for a, b in zip(np.cumsum([0, *batch_sizes[:-1]]), np.cumsum(batch_sizes))]
    assert all(step[: len(later)] == later for step, later in zip(step_docs, step_docs[1:]))


@pytest.mark.parametrize("lengths", [[4, 0, 7, 1], [5], [2, 2, 2]])
def test_outputs_and_gradients_match_each_doc_alone(lengths):
    torch.manual_seed(0)
    layer = PackedBiLSTM(6, 5)
    layer.initialize()
    lstm = layer.layers[0].shims[0]._model.lstm
    Xs = [np.random.default_rng(i).normal(size=(n, 5)).astype("f") for i, n in enumerate(lengths)]
    Ys, backprop = layer(Xs, is_train=True)
    dYs = [np.random.default_rng(10 + i).normal(size=(n, 12)).astype("f") for i, n in enumerate(lengths)]
    dXs = backprop(dYs)
    for X, Y, dY, dX in zip(Xs, Ys, dYs, dXs):
        assert Y.shape == (len(X), 12) and dX.shape == X.shape
        if not len(X):
            continue
        x = torch.tensor(X[:, None, :], requires_grad=True)  # one doc: (length, batch 1, width)
        y, _ = lstm(x)
        y[:, 0].backward(torch.as_tensor(dY))
        np.testing.assert_allclose(Y, y[:, 0].detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(dX, x.grad[:, 0].numpy(), atol=1e-5)


def test_all_empty_docs():
    layer = PackedBiLSTM(3, 4)
    layer.initialize()
    Ys, backprop = layer([np.zeros((0, 4), "f")] * 2, is_train=True)
    assert [Y.shape for Y in Ys] == [(0, 6), (0, 6)]
    assert [d.shape for d in backprop(Ys)] == [(0, 4), (0, 4)]
