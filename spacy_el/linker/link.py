"""Linking as a library: link texts through a pipeline into records, evaluate an encoder + index
on PubTator mentions (Acc@k, SapBERT protocol) and a pipeline end to end (spans, linking and
document concepts, `spacy_el.evaluate`).
The CLI commands in `spacy_el.cli.kb` are thin wrappers over these functions."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example

from spacy_el.ids import id_owners, ids_match, kb_spelling


# ---------------------------------------------------------------------- linking texts
def entity_record(ent) -> dict[str, Any]:
    """One linked entity as plain JSON: offsets, label, id, best name and score, candidates."""
    cands = ent._.kb_candidates or []
    best = cands[0] if cands and cands[0].concept_id == ent.kb_id_ else None
    return {
        "start": ent.start_char, "end": ent.end_char, "text": ent.text, "label": ent.label_,
        "id": ent.kb_id_, "name": best.name if best else None, "score": round(best.score, 4) if best else None,
        "candidates": [{"id": c.concept_id, "name": c.name, "score": round(c.score, 4), "source": c.source}
                       | ({"rerank_score": round(c.rerank_score, 4)} if c.rerank_score is not None else {})
                       for c in cands],
    }


def doc_record(doc: Doc) -> dict[str, Any]:
    """`{"text", "entities": [entity_record…]}`."""
    return {"text": doc.text, "entities": [entity_record(e) for e in doc.ents]}


def records_table(records: Iterable[dict[str, Any]]) -> str:
    """A plain-text table of the entities of `doc_record`s (one row per entity)."""
    rows = [("doc", "entity", "label", "id", "name", "score")]
    for i, rec in enumerate(records):
        for e in rec["entities"]:
            rows.append((str(i), e["text"], e["label"], e["id"], e["name"] or "",
                         "" if e["score"] is None else f"{e['score']:.3f}"))
    widths = [min(max(len(r[c]) for r in rows), 40) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell[:40].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# ---------------------------------------------------------------------- evaluation
def evaluate_linking(corpus_path: str | Path, encoder, index, *, types: Sequence[str] | None = None,
                     batch_size: int = 256, resolve_abbreviations: bool = False, reranker=None,
                     rerank_top_k: int | None = None) -> dict[str, Any]:
    """Acc@1/Acc@5 of encoder + index on a PubTator file's mentions, SapBERT's protocol
    (composite mentions split into parts when their texts line up; any shared id counts).
    Mentions whose gold ids are absent from the KB stay in the denominator and are counted.
    `resolve_abbreviations`: a mention that is a short form defined in its abstract
    (`el_abbreviation_detector`) is linked by its long form's text, as `sap_linker` can do.
    `reranker` (`spacy_el.sap.rerank.settings.Reranker`): each mention's first `rerank_top_k` candidates
    are reordered by it, reading the mention in its abstract, as `sap_linker` does: those whose first
    candidate it could overturn (`rerank_mentions`, the linker's rerank step, so what is timed is what
    is scored)."""
    from spacy_el.corpora.pubtator import linking_queries, read_pubtator
    from spacy_el.evaluate import accuracy_at_k, missing_from_kb

    corpus = read_pubtator(corpus_path, types=types)
    queries = linking_queries(corpus)
    texts = query_texts(corpus, queries, resolve_abbreviations)
    unique = list(dict.fromkeys(texts))
    k = max(5, rerank_top_k or 0)
    found = dict(zip(unique, index.search(encoder.embed(unique, batch_size=batch_size), k=k))) if unique else {}
    lists = [found[t] for t in texts]
    n_reranked = 0
    if reranker is not None:
        from spacy_el.sap.rerank.context import concept_names
        from spacy_el.sap.rerank.policy import rerank_mentions

        doc_text = {d.pmid: d.text for d in corpus.docs}

        def mention(i: int) -> tuple[str, int, int, str]:
            return doc_text[queries[i].pmid], queries[i].start, queries[i].end, texts[i]

        lists = rerank_mentions(reranker, lists, concept_names(index.table), mention, top_k=rerank_top_k,
                                bonus=index.concept_bonus())
        n_reranked = sum(bool(cands) and cands[0].rerank_score is not None for cands in lists)
    ranked = [[c.concept_id for c in cands] for cands in lists]
    scores = accuracy_at_k(ranked, [q.gold for q in queries], ks=(1, 5))
    return scores | {"n_reranked": n_reranked, "n_missing_from_kb": len(missing_from_kb(queries, index.table.ids)),
                     "n_nil_skipped": corpus.n_nil, "n_docs": len(corpus.docs), "corpus": str(corpus_path),
                     "n_abbreviations_resolved": sum(t != q.text for q, t in zip(queries, texts))}


def query_texts(corpus, queries, resolve_abbreviations: bool) -> list[str]:
    """The text each of a corpus's linking queries is searched by: its own, or, with
    `resolve_abbreviations`, the long form of a short form defined in its abstract."""
    if not resolve_abbreviations:
        return [q.text for q in queries]
    long_forms = abbreviation_long_forms(corpus)
    return [q.text if q.is_part else long_forms.get((q.pmid, q.start, q.end), q.text) for q in queries]


def abbreviation_long_forms(corpus) -> dict[tuple[str, int, int], str]:
    """(pmid, start, end) of every short form `el_abbreviation_detector` finds in a PubTator
    corpus's documents → the text of its long form."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("el_abbreviation_detector")
    long_forms: dict[tuple[str, int, int], str] = {}
    for pdoc, doc in zip(corpus.docs, nlp.pipe(d.text for d in corpus.docs)):
        for short, long in doc._.el_abbreviations:
            long_forms[(pdoc.pmid, short.start_char, short.end_char)] = long.text
    return long_forms


def pubtator_docs(nlp: Language, corpus, *, with_ents: bool, label: str | None = None,
                  ) -> list[tuple[Doc, list[tuple[int, int, str, str]]]]:
    """One doc per PubTator document (tokenized only) and its gold mentions as
    (start_char, end_char, label, gold id field), the label being `label` or the mention type;
    `with_ents` also sets the gold spans as `doc.ents`, so a linker can run without NER cost.
    Overlapping mentions keep the first."""
    out = []
    for pdoc in corpus.docs:
        doc = nlp.make_doc(pdoc.text)
        gold, spans, taken = [], [], set()
        for m in sorted(pdoc.mentions, key=lambda m: (m.start, -m.end)):
            span = doc.char_span(m.start, m.end, label=label or m.type, alignment_mode="expand")
            if span is None or taken & set(range(span.start, span.end)):
                continue
            taken |= set(range(span.start, span.end))
            spans.append(span)
            gold.append((span.start_char, span.end_char, span.label_, "|".join(m.ids)))
        if with_ents:
            doc.ents = spans
        out.append((doc, gold))
    return out


def evaluate_pipeline(nlp: Language, corpus_path: str | Path, *, types: Sequence[str] | None = None,
                      label: str | None = None, linker: str = "sap_linker", gold_ents: bool = False,
                      batch_size: int = 32) -> dict[str, Any]:
    """End-to-end scores of a pipeline on a PubTator file, each document's `title + " " +
    abstract` going through the pipeline's own tokenizer and every component:

    - `spans`, `linking`, `doc_concepts`: `spacy_el.evaluate.end_to_end_scores` (percent) over
      the predicted entities of the gold mentions' label(s): exact character offsets; span and
      concept; per-document concept sets (the DNorm/TaggerOne normalisation protocol), with
      `doc_concept_errors` putting each missed or wrong concept down to the tagger or the linker;
    - `words_per_s`: tokens / wall seconds of `nlp.pipe` (after one warm-up document);
    - spaCy's `nel_micro_p/r/f` and `ents_p/r/f` (fractions, all predicted entities), as before.
    A gold id field with several ids (composite or joint) counts a prediction that shares any of
    them as correct (SapBERT's protocol). `label` names the NER label of every gold mention (e.g.
    "Disease" for NCBI's four disease types); without it the mention types are the labels.
    With `gold_ents`, the gold spans are given to the pipeline and only `el_abbreviation_detector`
    and the linker run (the NER-perfect upper bound of linking)."""
    from spacy_el.corpora.pubtator import read_pubtator
    from spacy_el.evaluate import NIL_IDS, end_to_end_scores

    corpus = read_pubtator(corpus_path, types=types)
    pipe = nlp.get_pipe(linker)
    owners = id_owners(pipe.index.table.ids)
    pairs = pubtator_docs(nlp, corpus, with_ents=gold_ents, label=label)
    disable = [name for name in nlp.pipe_names
               if name != linker and nlp.get_pipe_meta(name).factory != "el_abbreviation_detector"] if gold_ents else []
    with nlp.select_pipes(disable=disable):
        predicted, seconds = _timed_pipe(nlp, [doc for doc, _ in pairs] if gold_ents else
                                         [pdoc.text for pdoc in corpus.docs], pipe, batch_size)
    examples = []
    for pred, (_, gold) in zip(predicted, pairs):
        by_offset = {(e.start_char, e.end_char): e.kb_id_ for e in pred.ents}
        ref = nlp.make_doc(pred.text)
        spans = []
        for start, end, label_, gold_id in gold:
            kb_id = kb_spelling(owners, gold_id)
            pred_id = by_offset.get((start, end))
            if pred_id and ids_match(pred_id, gold_id):
                kb_id = pred_id
            spans.append(ref.char_span(start, end, label=label_, kb_id=kb_id, alignment_mode="expand"))
        ref.ents = spans
        examples.append(Example(pred, ref))
    nil = pipe.cfg["nil_id"]
    scores = Scorer.score_links(examples, negative_labels=[nil])
    if not gold_ents:
        scores |= Scorer.score_spans(examples, "ents")
    scores = {k: v for k, v in scores.items() if not k.endswith("per_type")}
    # the end-to-end scorer: documents keyed by position (a PMID may repeat in a corpus)
    wanted = {label} if label else set(types) if types else None
    gold_anns = [(str(i), m.start, m.end, label or m.type, "|".join(m.ids))
                 for i, pdoc in enumerate(corpus.docs) for m in pdoc.mentions]
    pred_anns = [(str(i), e.start_char, e.end_char, e.label_, e.kb_id_)
                 for i, doc in enumerate(predicted) for e in doc.ents if wanted is None or e.label_ in wanted]
    scores |= end_to_end_scores(gold_anns, pred_anns, labels=True, nil_ids=NIL_IDS | {nil},
                                doc_ids=[str(i) for i in range(len(predicted))])
    n_words = sum(len(doc) for doc in predicted)
    return scores | {
        "words_per_s": n_words / seconds if seconds > 0 else 0.0, "n_words": n_words, "seconds": seconds,
        "n_docs": len(examples), "n_gold_mentions": sum(len(g) for _, g in pairs),
        "n_nil_skipped": corpus.n_nil, "gold_ents": gold_ents, "corpus": str(corpus_path)}


def threshold_sweep(nlp: Language, corpus_path: str | Path, thresholds: Sequence[float], *,
                    linker: str = "sap_linker", **options: Any) -> dict[str, dict[str, Any]]:
    """The pipeline's `spans`, `linking` and `doc_concepts` scores (`evaluate_pipeline`, with
    `options`) at each NIL threshold of its linker, keyed by the threshold as text; the linker's
    own threshold is restored after. A threshold suits one encoder and not another (a fine-tuned
    encoder puts its right answers at higher cosines), so it is calibrated on dev this way."""
    pipe = nlp.get_pipe(linker)
    own = pipe.cfg["threshold"]
    out = {}
    try:
        for value in thresholds:
            pipe.cfg["threshold"] = value
            scores = evaluate_pipeline(nlp, corpus_path, linker=linker, **options)
            out[str(value)] = {key: scores[key] for key in ("spans", "linking", "doc_concepts")}
    finally:
        pipe.cfg["threshold"] = own
    return out


def best_threshold(sweep: dict[str, dict[str, Any]]) -> str:
    """The threshold of a `threshold_sweep` with the best document-concept F."""
    return max(sweep.items(), key=lambda kv: kv[1]["doc_concepts"]["f"])[0]


def evaluate(corpus_path: str | Path, *, encoder: str | None = None, index: str | Path | None = None,
             pipeline: str | Path | None = None, types: Sequence[str] | None = None, label: str | None = None,
             gold_ents: bool = False, resolve_abbreviations: bool = False, prior_weight: float | None = None,
             thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """What `spacy-el evaluate-linking` reports: `linking` (Acc@k of `encoder` + `index`,
    `evaluate_linking`), `pipeline` (end-to-end scores, `evaluate_pipeline`) and, with
    `thresholds`, `threshold_sweep` (`threshold_sweep`), for the parts given."""
    from spacy_el.io import InputError

    if (encoder is None) != (index is None) or (encoder is None and pipeline is None):
        raise InputError("give --encoder and --index (Acc@k), --pipeline (end to end), or all three")
    if thresholds and pipeline is None:
        raise InputError("--thresholds scores a pipeline's NIL threshold: give --pipeline too")
    scores: dict[str, Any] = {}
    if encoder is not None:
        from spacy_el.kb.index import ConceptIndex
        from spacy_el.sap.encoders import load_encoder

        enc = load_encoder(encoder)
        scores["linking"] = evaluate_linking(corpus_path, enc, ConceptIndex.load(index, enc, prior_weight=prior_weight),
                                             types=types, resolve_abbreviations=resolve_abbreviations)
    if pipeline is not None:
        import spacy

        nlp = spacy.load(pipeline)
        options = {"types": types, "label": label, "gold_ents": gold_ents}
        scores["pipeline"] = evaluate_pipeline(nlp, corpus_path, **options)
        if thresholds:
            scores["threshold_sweep"] = threshold_sweep(nlp, corpus_path, thresholds, **options)
    return scores


def _timed_pipe(nlp: Language, inputs: list, linker, batch_size: int) -> tuple[list[Doc], float]:
    """The docs of `nlp.pipe(inputs)` and its wall seconds, after one warm-up document (which
    loads lazily loaded models) and with the linker's mention cache emptied before and after."""
    if inputs:
        first = inputs[0]
        nlp(first.copy() if isinstance(first, Doc) else first)
    linker.clear_cache()
    start = time.perf_counter()
    docs = list(nlp.pipe(inputs, batch_size=batch_size))
    seconds = time.perf_counter() - start
    linker.clear_cache()
    return docs, seconds
