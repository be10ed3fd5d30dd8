"""Metrics: linking accuracy at k (BioSyn, SapBERT) and the end-to-end scores of a pipeline on
annotated abstracts (mention spans, mention-level linking, document-level concept sets).

A prediction is a concept id as the KB spells it (possibly several ids, `MESH:C567755|OMIM:613097`);
it is correct when it shares any id with the gold (`spacy_el.ids.ids_match`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, NamedTuple, Sequence

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


# ---------------------------------------------------------------------- end to end
#: Concept fields that mean "no concept": PubTator's `-1`, `sap_linker`'s default `nil_id`, none.
NIL_IDS = frozenset({"", "-1", "NIL"})


class Annotation(NamedTuple):
    """One mention: its document, character offsets into the document text, label (None: not
    compared) and concept id field (`D003110|D009369`, `MESH:C567755|OMIM:613097`, `-1`, "")."""

    doc_id: str
    start: int
    end: int
    label: str | None
    concept: str


def concept_ids(field: str, nil_ids: Iterable[str] = NIL_IDS) -> set[str]:
    """The canonical ids of a concept field, NIL parts left out (`"D01|-1"` → `{"MESH:D01"}`)."""
    nil = set(nil_ids)
    if field.strip() in nil:
        return set()
    return {i for i in split_ids(field) if i not in nil}


def prf(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict[str, float]:
    """Precision (`tp_pred / n_pred`), recall (`tp_gold / n_gold`) and F1, in percent, with the
    counts. The two true-positive counts differ only for document concepts, where one predicted
    concept with several ids can cover several gold ids."""
    p = 100.0 * tp_pred / n_pred if n_pred else 0.0
    r = 100.0 * tp_gold / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f, "tp": tp_gold, "n_pred": n_pred, "n_gold": n_gold}


def _as_annotations(items: Iterable[Sequence]) -> list[Annotation]:
    """Accept (doc, start, end, label, concept) or (doc, start, end, concept) tuples."""
    out = []
    for item in items:
        if len(item) == 4:
            doc_id, start, end, concept = item
            label = None
        else:
            doc_id, start, end, label, concept = item
        out.append(Annotation(str(doc_id), int(start), int(end), label, concept))
    return out


def _span_key(a: Annotation, with_label: bool) -> tuple:
    return (a.doc_id, a.start, a.end, a.label) if with_label else (a.doc_id, a.start, a.end)


def _with_label(gold: list[Annotation], pred: list[Annotation], labels: bool | None) -> bool:
    if labels is None:  # compare labels when every annotation carries one
        return all(a.label is not None for a in gold + pred)
    return labels


def span_scores(gold: Iterable[Sequence], predicted: Iterable[Sequence], *,
                labels: bool | None = None) -> dict[str, float]:
    """Mention spans P/R/F (percent): a predicted mention is right when its document and exact
    character offsets (and label, with `labels`; by default when every annotation has one)
    equal a gold mention's. Concepts are ignored, NIL gold mentions are mentions too."""
    gold, pred = _as_annotations(gold), _as_annotations(predicted)
    with_label = _with_label(gold, pred, labels)
    gold_keys = {_span_key(a, with_label) for a in gold}
    pred_keys = {_span_key(a, with_label) for a in pred}
    tp = len(gold_keys & pred_keys)
    return prf(tp, len(pred_keys), tp, len(gold_keys))


def linking_scores(gold: Iterable[Sequence], predicted: Iterable[Sequence], *, labels: bool | None = None,
                   nil_ids: Iterable[str] = NIL_IDS) -> dict[str, float]:
    """Mention-level linking P/R/F (percent): over the gold mentions with a concept and the
    predicted mentions with a concept (NIL ones left out on both sides), a prediction is right
    when its span is exact (as in `span_scores`) and its concept shares an id with that gold
    mention's field (a composite or multi-id field matches through any of its ids)."""
    gold, pred = _as_annotations(gold), _as_annotations(predicted)
    with_label = _with_label(gold, pred, labels)
    gold_ids: dict[tuple, set[str]] = defaultdict(set)
    for a in gold:
        if ids := concept_ids(a.concept, nil_ids):
            gold_ids[_span_key(a, with_label)] |= ids
    pred_ids: dict[tuple, set[str]] = {}
    for a in pred:
        key = _span_key(a, with_label)
        if key not in pred_ids and (ids := concept_ids(a.concept, nil_ids)):
            pred_ids[key] = ids
    tp = sum(1 for key, ids in pred_ids.items() if ids & gold_ids.get(key, set()))
    return prf(tp, len(pred_ids), tp, len(gold_ids))


def document_concept_scores(gold: Iterable[Sequence], predicted: Iterable[Sequence], *,
                            nil_ids: Iterable[str] = NIL_IDS,
                            doc_ids: Iterable[str] | None = None) -> dict[str, float]:
    """Document-level concepts P/R/F (percent), the DNorm/TaggerOne normalisation protocol,
    micro-averaged over documents. Per document, the gold set holds every id of every gold
    mention (composite `|` parts and joint `+` ids each count; NIL excluded) and the predicted
    set holds each distinct predicted concept (NIL and empty excluded). A predicted concept is
    right when any of its ids is a gold id; a gold id is found when any predicted concept has it.
    Spans and labels play no part. `doc_ids` lists the documents (default: those annotated)."""
    gold, pred = _as_annotations(gold), _as_annotations(predicted)
    gold_sets: dict[str, set[str]] = defaultdict(set)
    pred_sets: dict[str, set[frozenset[str]]] = defaultdict(set)
    for a in gold:
        gold_sets[a.doc_id] |= concept_ids(a.concept, nil_ids)
    for a in pred:
        if ids := concept_ids(a.concept, nil_ids):
            pred_sets[a.doc_id].add(frozenset(ids))
    docs = set(doc_ids) if doc_ids is not None else set(gold_sets) | set(pred_sets)
    tp_pred = n_pred = tp_gold = n_gold = 0
    for doc in docs:
        want, got = gold_sets.get(doc, set()), pred_sets.get(doc, set())
        found = set().union(*got) if got else set()
        tp_pred += sum(1 for concept in got if concept & want)
        n_pred += len(got)
        tp_gold += len(want & found)
        n_gold += len(want)
    return prf(tp_pred, n_pred, tp_gold, n_gold) | {"tp_pred": tp_pred, "n_docs": len(docs)}


def document_concept_errors(gold: Iterable[Sequence], predicted: Iterable[Sequence], *,
                            nil_ids: Iterable[str] = NIL_IDS) -> dict[str, dict[str, int]]:
    """Where the document-concept errors of `document_concept_scores` come from, so that a
    pipeline's points can be put down to its tagger or its linker:

    - `missed` gold ids, by their gold mentions in the document: `linked` (a predicted mention
      has a gold mention's exact span, the linker chose another concept), `boundary` (predicted
      mentions only overlap them), `untagged` (no predicted mention touches them);
    - `wrong` predicted concepts, by their predicted mentions: `linked` (on a gold mention's exact
      span), `boundary` (overlapping one), `spurious` (touching no gold mention).

    Offsets decide, labels do not (as for the concept sets). The counts add up to the misses and
    the wrong predictions behind `document_concept_scores`' recall and precision."""
    gold, pred = _as_annotations(gold), _as_annotations(predicted)
    by_doc: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for a in gold:
        by_doc[a.doc_id][0].append((a, concept_ids(a.concept, nil_ids)))
    for a in pred:
        by_doc[a.doc_id][1].append((a, concept_ids(a.concept, nil_ids)))

    def kind(mentions: list[Annotation], others: list[Annotation], untouched: str) -> str:
        spans = {(o.start, o.end) for o in others}
        if any((m.start, m.end) in spans for m in mentions):
            return "linked"
        if any(m.start < o.end and o.start < m.end for m in mentions for o in others):
            return "boundary"
        return untouched

    missed = dict.fromkeys(("untagged", "boundary", "linked"), 0)
    wrong = dict.fromkeys(("spurious", "boundary", "linked"), 0)
    for golds, preds in by_doc.values():
        want = set().union(*(ids for _, ids in golds))
        found = set().union(*(ids for _, ids in preds))
        gold_mentions, pred_mentions = [a for a, _ in golds], [a for a, _ in preds]
        for cid in want - found:
            missed[kind([a for a, ids in golds if cid in ids], pred_mentions, "untagged")] += 1
        for concept in {frozenset(ids) for _, ids in preds if ids and not ids & want}:
            wrong[kind([a for a, ids in preds if ids == concept], gold_mentions, "spurious")] += 1
    return {"missed": missed, "wrong": wrong}


def end_to_end_scores(gold: Iterable[Sequence], predicted: Iterable[Sequence], *, labels: bool | None = None,
                      nil_ids: Iterable[str] = NIL_IDS,
                      doc_ids: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """`{"spans", "linking", "doc_concepts", "doc_concept_errors"}`: the score groups above on one
    set of (doc id, start, end, [label], concept) annotations."""
    gold, predicted = list(gold), list(predicted)
    return {"spans": span_scores(gold, predicted, labels=labels),
            "linking": linking_scores(gold, predicted, labels=labels, nil_ids=nil_ids),
            "doc_concepts": document_concept_scores(gold, predicted, nil_ids=nil_ids, doc_ids=doc_ids),
            "doc_concept_errors": document_concept_errors(gold, predicted, nil_ids=nil_ids)}
