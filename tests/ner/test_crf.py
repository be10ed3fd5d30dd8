"""The BIO CRF: log-likelihood and gradients against brute-force enumeration, partial labels,
distillation from a teacher CRF, and decoding that never yields an invalid BIO sequence."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from spacy_el.ner.crf import (FORBIDDEN, bio_constraints, bio_tags, crf_loss, span_probabilities, teacher_targets,
                              viterbi)

LABELS = ["A", "B"]
N_TAGS = 1 + 2 * len(LABELS)


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    masks = bio_constraints(len(LABELS))
    learned = [rng.normal(size=m.shape).astype("f") for m in masks]
    start, trans, end = (x + m for x, m in zip(learned, masks))
    emissions = [rng.normal(size=(n, N_TAGS)).astype("f") for n in (4, 1, 3)]
    return emissions, start, trans, end


def path_score(e, path, start, trans, end) -> float:
    return float(start[path[0]] + e[0, path[0]] + end[path[-1]]
                 + sum(trans[a, b] + e[t + 1, b] for t, (a, b) in enumerate(zip(path, path[1:]))))


def brute_nll(e, allowed, start, trans, end) -> float:
    paths = list(itertools.product(range(N_TAGS), repeat=len(e)))
    scores = np.array([path_score(e, p, start, trans, end) for p in paths], dtype="f8")
    ok = np.array([all(allowed[t, tag] for t, tag in enumerate(p)) for p in paths])
    return float(np.logaddexp.reduce(scores) - np.logaddexp.reduce(scores[ok]))


def is_valid_bio(tags) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_tag_order_and_constraints():
    assert bio_tags(LABELS) == ["O", "B-A", "I-A", "B-B", "I-B"]
    start, trans, end = bio_constraints(2)
    assert start[2] == start[4] == FORBIDDEN and start[[0, 1, 3]].max() == 0
    assert trans[1, 2] == trans[2, 2] == 0 and trans[0, 2] == trans[3, 2] == trans[4, 2] == FORBIDDEN
    assert trans[0, 4] == trans[1, 4] == FORBIDDEN and trans[3, 4] == 0 and not end.any()


@pytest.mark.parametrize("unknown", [False, True])
def test_loss_equals_brute_force_enumeration(scores, unknown):
    emissions, start, trans, end = scores
    gold = [[1, 2, 0, 3], [3], [0, 3, 4]]
    allowed = [np.eye(N_TAGS, dtype=bool)[g] for g in gold]
    if unknown:  # a token without annotation: every tag allowed there
        allowed[0][2] = True
    loss, *_ = crf_loss(emissions, allowed, start, trans, end)
    expected = sum(brute_nll(e, a, start, trans, end) for e, a in zip(emissions, allowed))
    assert loss == pytest.approx(expected, rel=1e-4)


def test_gradients_match_finite_differences(scores):
    emissions, start, trans, end = scores
    allowed = [np.eye(N_TAGS, dtype=bool)[g] for g in ([1, 2, 0, 3], [3], [0, 3, 4])]
    allowed[0][1] = True
    _, d_emissions, d_start, d_trans, d_end = crf_loss(emissions, allowed, start, trans, end)
    eps = 1e-2

    def numeric(make):
        return (make(eps) - make(-eps)) / (2 * eps)

    def with_emission(delta):
        e = [x.astype("f8").copy() for x in emissions]
        e[0][2, 3] += delta
        return sum(brute_nll(x, a, start, trans, end) for x, a in zip(e, allowed))

    def with_trans(delta):
        t = trans.astype("f8").copy()
        t[3, 4] += delta
        return sum(brute_nll(x, a, start, t, end) for x, a in zip(emissions, allowed))

    def with_end(delta):
        e = end.astype("f8").copy()
        e[0] += delta
        return sum(brute_nll(x, a, start, trans, e) for x, a in zip(emissions, allowed))

    assert d_emissions[0][2, 3] == pytest.approx(numeric(with_emission), abs=1e-3)
    assert d_trans[3, 4] == pytest.approx(numeric(with_trans), abs=1e-3)
    assert d_end[0] == pytest.approx(numeric(with_end), abs=1e-3)
    assert d_start.shape == (N_TAGS,)


def brute_teacher_nll(e, teacher, start, trans, end, T: float = 1.0) -> float:
    """T² (log Z - E_teacher[score]) with every score divided by T: the expected NLL of every path,
    weighted by the teacher CRF's probability."""
    t_e, t_start, t_trans, t_end = teacher
    paths = list(itertools.product(range(N_TAGS), repeat=len(e)))
    student = np.array([path_score(e, p, start, trans, end) for p in paths], dtype="f8") / T
    t_scores = np.array([path_score(t_e, p, t_start, t_trans, t_end) for p in paths], dtype="f8") / T
    t_prob = np.exp(t_scores - np.logaddexp.reduce(t_scores))
    return float(T * T * (np.logaddexp.reduce(student) - (t_prob * student).sum()))


@pytest.fixture
def teacher(scores):
    """Another CRF over the same docs: its own emissions and scores."""
    emissions, *_ = scores
    rng = np.random.default_rng(7)
    masks = bio_constraints(len(LABELS))
    t_start, t_trans, t_end = (rng.normal(size=m.shape).astype("f") + m for m in masks)
    return [rng.normal(size=e.shape).astype("f") for e in emissions], t_start, t_trans, t_end


@pytest.mark.parametrize("weight,T", [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (0.5, 2.5)])
def test_distillation_loss_mixes_nll_and_expected_nll_under_the_teacher(scores, teacher, weight, T):
    emissions, start, trans, end = scores
    targets = teacher_targets(*teacher, temperature=T)
    allowed = [np.eye(N_TAGS, dtype=bool)[g] for g in ([1, 2, 0, 3], [3], [0, 3, 4])]
    targets[1] = None  # a doc without teacher targets keeps the plain NLL
    loss, *_ = crf_loss(emissions, allowed, start, trans, end, teachers=targets, teacher_weight=weight, temperature=T)
    expected = sum(
        brute_nll(e, a, start, trans, end) if t is None else
        (1 - weight) * brute_nll(e, a, start, trans, end)
        + weight * brute_teacher_nll(e, (t_e, *teacher[1:]), start, trans, end, T)
        for e, a, t, t_e in zip(emissions, allowed, targets, teacher[0]))
    assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_distillation_gradients_match_finite_differences(scores, teacher, T):
    emissions, start, trans, end = scores
    targets = teacher_targets(*teacher, temperature=T)
    allowed = [np.eye(N_TAGS, dtype=bool)[g] for g in ([1, 2, 0, 3], [3], [0, 3, 4])]
    _, d_emissions, d_start, d_trans, d_end = crf_loss(emissions, allowed, start, trans, end,
                                                       teachers=targets, teacher_weight=0.5, temperature=T)

    def total(e=emissions, s=start, t=trans, n=end):
        return sum(0.5 * brute_nll(x, a, s, t, n) + 0.5 * brute_teacher_nll(x, (t_e, *teacher[1:]), s, t, n, T)
                   for x, a, t_e in zip(e, allowed, teacher[0]))

    eps = 1e-2
    e_plus, e_minus = ([x.astype("f8").copy() for x in emissions] for _ in range(2))
    e_plus[2][1, 4] += eps
    e_minus[2][1, 4] -= eps
    t_plus, t_minus = trans.astype("f8").copy(), trans.astype("f8").copy()
    t_plus[0, 3] += eps
    t_minus[0, 3] -= eps
    s_plus, s_minus = start.astype("f8").copy(), start.astype("f8").copy()
    s_plus[1] += eps
    s_minus[1] -= eps
    assert d_emissions[2][1, 4] == pytest.approx((total(e=e_plus) - total(e=e_minus)) / (2 * eps), abs=1e-3)
    assert d_trans[0, 3] == pytest.approx((total(t=t_plus) - total(t=t_minus)) / (2 * eps), abs=1e-3)
    assert d_start[1] == pytest.approx((total(s=s_plus) - total(s=s_minus)) / (2 * eps), abs=1e-3)


def test_teacher_targets_are_marginals(teacher):
    for marginals, pair in teacher_targets(*teacher):
        assert marginals.sum(axis=1) == pytest.approx(np.ones(len(marginals)), abs=1e-5)
        assert pair.sum() == pytest.approx(len(marginals) - 1, abs=1e-4)  # one move between each two tokens
        assert pair[0, 2] < 1e-6  # O → I-A is forbidden, so the teacher never takes it


def test_empty_docs_add_nothing(scores):
    emissions, start, trans, end = scores
    loss, d_emissions, *_ = crf_loss([np.zeros((0, N_TAGS), "f")], [np.zeros((0, N_TAGS), bool)], start, trans, end)
    assert loss == 0.0 and d_emissions[0].shape == (0, N_TAGS)


def test_viterbi_is_the_best_path(scores):
    emissions, start, trans, end = scores
    for e, path in zip(emissions, viterbi(emissions, start, trans, end)):
        best = max(itertools.product(range(N_TAGS), repeat=len(e)), key=lambda p: path_score(e, p, start, trans, end))
        assert tuple(path) == best


def test_decoding_never_yields_invalid_bio():
    rng = np.random.default_rng(1)
    masks = bio_constraints(len(LABELS))
    tags = bio_tags(LABELS)
    for _ in range(50):
        # Learned scores that strongly prefer forbidden moves (I-X first, I-B after B-A, …)
        learned = [rng.normal(scale=50.0, size=m.shape).astype("f") for m in masks]
        start, trans, end = (x + m for x, m in zip(learned, masks))
        emissions = [rng.normal(scale=50.0, size=(n, N_TAGS)).astype("f") for n in rng.integers(1, 30, size=8)]
        for path in viterbi(emissions, start, trans, end, max_cells=40):
            assert is_valid_bio([tags[i] for i in path])


def brute_span_probabilities(e, start, trans, end) -> dict:
    """Every (start, end, label) entity's probability, by summing the paths that contain it."""
    tags = bio_tags(LABELS)
    paths = list(itertools.product(range(N_TAGS), repeat=len(e)))
    weights = np.exp(np.array([path_score(e, p, start, trans, end) for p in paths], dtype="f8"))
    probs: dict = {}
    for path, weight in zip(paths, weights):
        t = 0
        while t < len(path):
            if tags[path[t]].startswith("B-"):
                k, stop = (path[t] - 1) // 2, t + 1
                while stop < len(path) and path[stop] == 2 + 2 * k:
                    stop += 1
                probs[(t, stop, k)] = probs.get((t, stop, k), 0.0) + weight
                t = stop
            else:
                t += 1
    return {key: w / weights.sum() for key, w in probs.items()}


@pytest.mark.parametrize("min_prob", [1e-6, 0.2])
def test_span_probabilities_equal_brute_force_enumeration(scores, min_prob):
    emissions, start, trans, end = scores
    emissions = emissions + [np.zeros((0, N_TAGS), "f")]  # an empty doc has no spans
    got = span_probabilities(emissions, start, trans, end, min_prob=min_prob)
    assert got[-1] == []
    for e, spans in zip(emissions[:-1], got):
        want = {key: p for key, p in brute_span_probabilities(e, start, trans, end).items() if p >= min_prob}
        assert {(s, t, k) for s, t, k, _ in spans} == set(want)
        for s, t, k, p in spans:
            assert p == pytest.approx(want[(s, t, k)], rel=1e-4)
    # docs decoded in small padded groups give the same spans
    assert span_probabilities(emissions, start, trans, end, min_prob=min_prob, max_cells=3) == got
    # lengths are capped at max_length
    capped = span_probabilities(emissions[:1], start, trans, end, min_prob=1e-6, max_length=1)
    assert capped[0] and all(t - s == 1 for s, t, _, _ in capped[0])
