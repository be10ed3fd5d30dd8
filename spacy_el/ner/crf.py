"""A linear-chain CRF over BIO tags, in numpy: the training objective (forward-backward) and
the decoder (Viterbi), both restricted to valid BIO sequences.

The tagger's model emits one score per (token, tag); the CRF adds learned start, transition and
end scores. Invalid BIO moves (`I-X` after anything but `B-X`/`I-X`, or at the start) get a
fixed large negative score in both training and decoding, so the model never spends
probability on them and decoding never returns them.

Training maximises log p(gold | doc) = score(gold) - log Z. Gold tags may be partly unknown
(tokens without annotation): then the numerator sums over every sequence that agrees with the
known tags, i.e. the objective is log Z(constrained) - log Z(free), whose gradient is the
difference of the two sets of marginals. With full gold, that is the usual CRF loss.
Docs are padded into one batch and processed together; the free and constrained passes share it.

Distillation: a doc may also carry a teacher CRF's tag marginals and expected transition counts
(`teacher_targets`). Its loss is then mixed with the expected negative log-likelihood under the
teacher's distribution over sequences, log Z - E_teacher[score], whose gradient is the student's
marginals minus the teacher's: the student learns where the teacher hesitates, not only its
best path.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

#: Score of a forbidden move: exp() of it is 0 in float32, sums of it stay finite.
FORBIDDEN = -1e4


def bio_tags(labels: Sequence[str]) -> List[str]:
    """The tag set of a label list, in the order scores use: O, then B-/I- for each label."""
    return ["O"] + [f"{prefix}-{label}" for label in labels for prefix in ("B", "I")]


def bio_constraints(n_labels: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, transition, end) masks: 0 where BIO allows the move, FORBIDDEN where it does not."""
    n_tags = 1 + 2 * n_labels
    trans = np.zeros((n_tags, n_tags), dtype="f")
    start = np.zeros((n_tags,), dtype="f")
    for k in range(n_labels):
        b, i = 1 + 2 * k, 2 + 2 * k
        trans[:, i] = FORBIDDEN  # I-X only after B-X or I-X
        trans[b, i] = 0.0
        trans[i, i] = 0.0
        start[i] = FORBIDDEN
    return start, trans, np.zeros((n_tags,), dtype="f")


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _pad(arrays: List[np.ndarray], fill: float) -> Tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays])
    out = np.full((len(arrays), int(lengths.max()), arrays[0].shape[1]), fill, dtype="f")
    for d, a in enumerate(arrays):
        out[d, : len(a)] = a
    return out, lengths


def _forward_backward_tables(
    emissions: np.ndarray, lengths: np.ndarray, start: np.ndarray, trans: np.ndarray, end: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha (log score of every prefix ending in each tag, its emission included), beta (of every
    suffix after each tag, its emission excluded) and log Z, per doc of padded `emissions`."""
    n_docs, n_steps, n_tags = emissions.shape
    alpha = np.zeros_like(emissions)
    alpha[:, 0] = start + emissions[:, 0]
    for t in range(1, n_steps):
        new = _logsumexp(alpha[:, t - 1, :, None] + trans[None], axis=1) + emissions[:, t]
        alpha[:, t] = np.where((t < lengths)[:, None], new, alpha[:, t - 1])  # padding copies forward
    log_z = _logsumexp(alpha[:, -1] + end, axis=1)
    beta = np.zeros_like(emissions)
    beta[:, -1] = end
    for t in range(n_steps - 2, -1, -1):
        new = _logsumexp(trans[None] + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)
        beta[:, t] = np.where((t + 1 < lengths)[:, None], new, beta[:, t + 1])
    return alpha, beta, log_z


def span_probabilities(
    emissions: List[np.ndarray], start: np.ndarray, trans: np.ndarray, end: np.ndarray, *,
    min_prob: float, max_length: int = 10, max_cells: int = 200_000,
) -> List[List[Tuple[int, int, int, float]]]:
    """Per doc, every entity span the CRF gives probability >= `min_prob` (and at most
    `max_length` tokens) as (start token, end token, label index, probability): the probability
    that exactly these tokens form one entity of that label (B-X, then I-X to the end, then not
    I-X), summed over every tagging of the rest of the doc. What `bilstm_ner` offers the linker as
    alternatives to its best path (`alternatives_key`). Docs are processed in padded groups of
    at most `max_cells` tokens, as `viterbi` decodes them."""
    out: List[List[Tuple[int, int, int, float]]] = [[] for _ in emissions]
    order = [i for i in sorted(range(len(emissions)), key=lambda i: -len(emissions[i])) if len(emissions[i])]
    pos = 0
    while pos < len(order):
        group = order[pos : pos + max(1, max_cells // len(emissions[order[pos]]))]
        pos += len(group)
        _group_span_probabilities(emissions, group, start, trans, end, min_prob, max_length, out)
    return out


def _group_span_probabilities(emissions: List[np.ndarray], keep: List[int], start: np.ndarray, trans: np.ndarray,
                              end: np.ndarray, min_prob: float, max_length: int,
                              out: List[List[Tuple[int, int, int, float]]]) -> None:
    padded, lengths = _pad([np.asarray(emissions[i], dtype="f") for i in keep], 0.0)
    alpha, beta, log_z = _forward_backward_tables(padded, lengths, start, trans, end)
    n_labels = (len(start) - 1) // 2
    log_min = np.log(min_prob)
    for d, i in enumerate(keep):
        n, em, a, b, z = int(lengths[d]), padded[d], alpha[d], beta[d], float(log_z[d])
        for k in range(n_labels):
            tag_b, tag_i = 1 + 2 * k, 2 + 2 * k
            not_i = np.arange(len(start)) != tag_i
            # the span's probability is at most its first token's B-X marginal
            for s in np.nonzero(a[:n, tag_b] + b[:n, tag_b] - z >= log_min)[0]:
                score, last = a[s, tag_b], tag_b  # every path up to s ending in B-X at s
                for e in range(s, min(n, s + max_length)):
                    if e > s:
                        score = score + trans[last, tag_i] + em[e, tag_i]
                        last = tag_i
                        if score + b[e, tag_i] - z < log_min:  # I-X through e is already too rare
                            break
                    if e == n - 1:
                        tail = end[last]
                    else:
                        nxt = trans[last] + em[e + 1] + b[e + 1]
                        tail = _logsumexp(nxt[not_i][None], axis=1)[0]
                    prob = float(np.exp(score + tail - z))
                    if prob >= min_prob:
                        out[i].append((int(s), int(e + 1), k, prob))


def forward_backward(
    emissions: np.ndarray, lengths: np.ndarray, start: np.ndarray, trans: np.ndarray, end: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log Z per doc, tag marginals (docs, steps, tags; 0 on padding) and expected transition
    counts summed over each doc's steps (docs, tags, tags), for padded `emissions`."""
    n_docs, n_steps, n_tags = emissions.shape
    alpha, beta, log_z = _forward_backward_tables(emissions, lengths, start, trans, end)
    valid = (np.arange(n_steps)[None, :] < lengths[:, None])[:, :, None]
    marginals = np.where(valid, np.exp(alpha + beta - log_z[:, None, None]), 0.0)
    pair = np.zeros((n_docs, n_tags, n_tags), dtype="f")
    for t in range(1, n_steps):
        xi = alpha[:, t - 1, :, None] + trans[None] + (emissions[:, t] + beta[:, t])[:, None, :]
        xi = np.exp(xi - log_z[:, None, None])
        pair += np.where((t < lengths)[:, None, None], xi, 0.0)
    return log_z, marginals, pair


def teacher_targets(
    emissions: List[np.ndarray], start: np.ndarray, trans: np.ndarray, end: np.ndarray, temperature: float = 1.0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Per doc, a CRF's tag marginals (n_tokens, n_tags) and expected transition counts
    (n_tags, n_tags) with every score divided by `temperature` (> 1 softens the distribution, as
    in Hinton et al.'s distillation): what `crf_loss` distils from. Empty docs get empty marginals."""
    keep = [i for i, e in enumerate(emissions) if len(e)]
    n_tags = len(start)
    out = [(np.zeros((0, n_tags), "f"), np.zeros((n_tags, n_tags), "f")) for _ in emissions]
    if keep:
        padded, lengths = _pad([np.asarray(emissions[i], dtype="f") / temperature for i in keep], 0.0)
        _, marginals, pair = forward_backward(padded, lengths, start / temperature, trans / temperature,
                                              end / temperature)
        for j, i in enumerate(keep):
            out[i] = (marginals[j, : lengths[j]].astype("f"), pair[j].astype("f"))
    return out


def crf_loss(
    emissions: List[np.ndarray],
    allowed: List[np.ndarray],
    start: np.ndarray,
    trans: np.ndarray,
    end: np.ndarray,
    teachers: Optional[List[Optional[Tuple[np.ndarray, np.ndarray]]]] = None,
    teacher_weight: float = 0.0,
    temperature: float = 1.0,
) -> Tuple[float, List[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Negative log-likelihood summed over docs, and its gradients with respect to the
    emissions (one array per doc), start, transition and end scores.

    emissions: per doc, (n_tokens, n_tags) scores; empty docs contribute nothing.
    allowed: per doc, (n_tokens, n_tags) booleans: the tags the gold admits at each token (one
        True for a known tag, all True for an unknown one). start/trans/end are the full scores
        (learned + BIO constraints).
    teachers: per doc, None or a teacher's (marginals, transition counts) at `temperature`
        (`teacher_targets`). Such a doc's loss is (1 - teacher_weight) * its NLL + teacher_weight *
        T² * its expected NLL under the teacher with the student's scores divided by T (T² keeps
        the soft part's gradients at the hard part's scale, as in Hinton et al.)."""
    keep = [i for i, e in enumerate(emissions) if len(e)]
    d_emissions = [np.zeros_like(e, dtype="f") for e in emissions]
    if not keep:
        return 0.0, d_emissions, np.zeros_like(start), np.zeros_like(trans), np.zeros_like(end)
    free = [np.asarray(emissions[i], dtype="f") for i in keep]
    gold = [e + np.where(allowed[i], 0.0, FORBIDDEN).astype("f") for e, i in zip(free, keep)]
    padded, lengths = _pad(free + gold, 0.0)
    log_z, marginals, pair = forward_backward(padded, lengths, start, trans, end)
    n = len(free)
    rows, last = np.arange(n), lengths[:n] - 1
    loss = log_z[:n] - log_z[n:]
    d_marg, d_pair = marginals[:n] - marginals[n:], pair[:n] - pair[n:]
    taught = ([j for j, i in enumerate(keep) if teachers[i] is not None]
              if teachers is not None and teacher_weight else [])
    if taught:  # plain training allocates nothing more
        weights = np.zeros(n, dtype="f")
        t_marg, t_pair = np.zeros_like(d_marg), np.zeros_like(d_pair)
        for j in taught:
            i = keep[j]
            marg, moves = teachers[i]
            if marg.shape != free[j].shape or moves.shape != trans.shape:
                raise ValueError(f"crf_loss: doc {i}'s teacher targets are {marg.shape} / {moves.shape}, "
                                 f"its emissions {free[j].shape} and transitions {trans.shape}")
            weights[j], t_marg[j, : lengths[j]], t_pair[j] = teacher_weight, marg, moves
        T = temperature
        s_log_z, s_marg, s_pair = ((log_z[:n], marginals[:n], pair[:n]) if T == 1 else
                                   forward_backward(padded[:n] / T, lengths[:n], start / T, trans / T, end / T))
        # the teacher never takes a forbidden move: leave 0 * FORBIDDEN out of its expected score
        t_score = ((t_marg * padded[:n]).sum(axis=(1, 2)) + np.where(t_pair > 0, t_pair * trans, 0.0).sum(axis=(1, 2))
                   + (t_marg[:, 0] * start).sum(axis=1) + (t_marg[rows, last] * end).sum(axis=1))
        w = weights[:, None, None]
        loss = (1 - weights) * loss + weights * T * T * (s_log_z - t_score / T)
        d_marg = (1 - w) * d_marg + w * T * (s_marg - t_marg)
        d_pair = (1 - w) * d_pair + w * T * (s_pair - t_pair)
    for j, i in enumerate(keep):
        d_emissions[i] = d_marg[j, : lengths[j]].astype("f")
    d_start = d_marg[:, 0].sum(axis=0)
    d_end = d_marg[rows, last].sum(axis=0)
    return float(loss.sum()), d_emissions, d_start, d_pair.sum(axis=0), d_end


def viterbi(
    scores: List[np.ndarray],
    start: np.ndarray,
    trans: np.ndarray,
    end: Optional[np.ndarray] = None,
    max_cells: int = 200_000,
) -> List[np.ndarray]:
    """Best tag sequence per doc under per-token `scores` plus start/transition/end scores.

    Docs are sorted by length and decoded in padded groups (vectorised over docs and tags,
    looping over time), at most `max_cells` padded tokens per group, so one very long doc does
    not blow up memory."""
    end = np.zeros_like(start) if end is None else end
    results: List[np.ndarray] = [np.zeros((0,), dtype="i")] * len(scores)
    order = [i for i in sorted(range(len(scores)), key=lambda i: -len(scores[i])) if len(scores[i])]
    pos = 0
    while pos < len(order):
        size = max(1, max_cells // len(scores[order[pos]]))
        group = order[pos : pos + size]
        pos += len(group)
        for i, path in zip(group, _viterbi_group([scores[i] for i in group], start, trans, end)):
            results[i] = path
    return results


def _viterbi_group(scores: List[np.ndarray], start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> List[np.ndarray]:
    padded, lengths = _pad([np.asarray(s, dtype="f") for s in scores], 0.0)
    n_docs, n_steps, n_tags = padded.shape
    identity = np.broadcast_to(np.arange(n_tags), (n_docs, n_tags))
    back = np.zeros((n_docs, n_steps, n_tags), dtype="i")
    delta = padded[:, 0] + start
    for t in range(1, n_steps):
        cand = delta[:, :, None] + trans[None]  # (docs, from, to)
        best = cand.argmax(axis=1)
        new = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0] + padded[:, t]
        active = (t < lengths)[:, None]
        delta = np.where(active, new, delta)
        back[:, t] = np.where(active, best, identity)  # padding steps keep the path as is
    paths = np.zeros((n_docs, n_steps), dtype="i")
    current = (delta + end).argmax(axis=1)
    rows = np.arange(n_docs)
    for t in range(n_steps - 1, -1, -1):
        paths[:, t] = current
        current = back[rows, t, current]
    return [paths[d, :n] for d, n in enumerate(lengths)]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
