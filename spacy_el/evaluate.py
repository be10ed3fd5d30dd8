"""Linking accuracy at k, the metric of BioSyn and SapBERT. Span-level P/R/F is spaCy's own scorer.

A prediction is a concept id as the KB spells it (possibly several ids, `MESH:C567755|OMIM:613097`);
it is correct when it shares any id with the gold (`spacy_el.ids.ids_match`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from spacy_el.ids import split_ids


def _gold_ids(gold: Sequence[str] | str) -> set[str]:
    fields = [gold] if isinstance(gold, str) else list(gold)
    return {i for f in fields for i in split_ids(f)}


def first_correct_rank(ranked: Sequence[str], gold: Sequence[str] | str) -> int | None:
    """0-based rank of the first correct candidate, None when no candidate is correct."""
    want = _gold_ids(gold)
    for rank, pred in enumerate(ranked):
        if want & set(split_ids(pred)):
            return rank
    return None


def accuracy_at_k(
    ranked: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str] | str],
    ks: Iterable[int] = (1, 5),
) -> dict[str, float]:
    """`{"acc@1": %, "acc@5": %, "n": queries}`: the share of queries with a correct concept
    among their top k candidates (`ranked[i]` best first, `gold[i]` the acceptable ids)."""
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} candidate lists for {len(gold)} gold labels")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    ranks = [first_correct_rank(r, g) for r, g in zip(ranked, gold)]
    n = len(ranks)
    out: dict[str, float] = {}
    for k in ks:
        hits = sum(1 for r in ranks if r is not None and r < k)
        out[f"acc@{k}"] = 100.0 * hits / n if n else 0.0
    out["n"] = n
    return out


def missing_from_kb(gold: Sequence[Sequence[str] | str], kb_ids: Iterable[str]) -> list[int]:
    """Indices of queries none of whose gold ids is in the KB: no encoder can link them, so
    they are reported (and kept in the denominator) rather than silently dropped.

    `gold` is a list of gold fields or `LinkingQuery`-like objects with a `.gold` attribute;
    `kb_ids` are concept ids as the KB spells them (a multi-id concept counts for each id)."""
    known = {i for cid in kb_ids for i in split_ids(cid)}
    out = []
    for idx, g in enumerate(gold):
        g = getattr(g, "gold", g)
        if not (_gold_ids(g) & known):
            out.append(idx)
    return out
