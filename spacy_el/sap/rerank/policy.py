"""Which entities go to the reranker and how its scores reorder their candidates: the one rerank
step that serving (`sap_linker`) and evaluation (`spacy_el.linker.link.evaluate_linking`) share.
Both scores stay on each `Candidate` (`score`: the cosine, `rerank_score`: the cross-encoder's)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from spacy_el.kb.index import Candidate
from spacy_el.sap.rerank.context import candidate_text, mention_in_context
from spacy_el.sap.rerank.settings import BATCH_SIZE, Reranker, RerankerSettings

def rerank(reranker: Reranker, contexts: Sequence[str], candidates: Sequence[Sequence[Candidate]],
           names: Mapping[str, Sequence[str]], *, top_k: int | None = None, weight: float | None = None,
           batch_size: int = BATCH_SIZE, bonus: Mapping[str, float] | None = None) -> list[list[Candidate]]:
    """Each mention's first `top_k` candidates (all when None) scored by the reranker and
    reordered by cosine + weight × score (the settings' weight unless given), plus the index's
    corpus-prior `bonus` of the concept when given (`ConceptIndex.concept_bonus`), so the prior
    keeps counting after reranking; candidates past `top_k` keep their order after them.
    `names`: concept id → its names (`concept_names`)."""
    bonus = bonus or {}
    k = reranker.settings.top_k if top_k is None else top_k
    w = reranker.settings.weight if weight is None else weight
    groups = [[candidate_text(c.name, names.get(c.concept_id, ()), reranker.settings.max_names) for c in cands[:k]]
              for cands in candidates]
    scores = reranker.score_groups(contexts, groups, batch_size=batch_size) if groups else []
    out: list[list[Candidate]] = []
    for cands, group_scores in zip(candidates, scores):
        head = [c._replace(rerank_score=float(s)) for c, s in zip(cands[:k], group_scores)]
        head.sort(key=lambda c: -(c.score + bonus.get(c.concept_id, 0.0) + w * c.rerank_score))
        out.append(head + list(cands[k:]))
    return out


#: The reach of a reranker is weight × this × its dev score spread: room for mentions that spread
#: their scores wider than any on dev did, and for int8 rounding.
SPREAD_HEADROOM = 1.5


def reach(settings: RerankerSettings) -> float:
    """How much the reranker can move a candidate's key relative to another's: weight × its score
    spread (with `SPREAD_HEADROOM`); infinite when the spread is not known."""
    if settings.score_spread is None:
        return float("inf")
    return settings.weight * settings.score_spread * SPREAD_HEADROOM


def worth_reranking(candidates: Sequence[Candidate], settings: RerankerSettings, top_k: int,
                    bonus: Mapping[str, float] | None = None) -> bool:
    """Whether a mention's candidates go to the reranker: when it could overturn the first candidate, i.e. its lead in the order `rerank` sorts
    by (cosine + prior bonus) over the best rival among the first `top_k` is below the reranker's
    `reach`; for the others reranking would leave the same first candidate, so skipping them
    changes no link (only the order behind it, and those candidates carry no `rerank_score`)."""
    if len(candidates) < 2:
        return False
    bonus = bonus or {}
    keys = [c.score + bonus.get(c.concept_id, 0.0) for c in candidates[:max(top_k, 2)]]
    return keys[0] - max(keys[1:]) < reach(settings)


def rerank_mentions(reranker: Reranker, candidates: Sequence[list], names: Mapping[str, Sequence[str]],
                    mention: Callable[[int], tuple[str, int, int, str]], *, top_k: int | None = None,
                    batch_size: int = BATCH_SIZE,
                    bonus: Mapping[str, float] | None = None) -> list[list[Candidate]]:
    """The rerank step of linking: each mention's candidates reordered by `rerank` when they are
    `worth_reranking` (within the reranker's reach), the others kept as they are.
    `mention(i)`: the i-th mention's document text, start and end characters, and the text it was
    searched by (shown when it differs from its own), read only for the mentions reranked.
    `top_k`: the candidates read (the reranker's `top_k` when None)."""
    k = reranker.settings.top_k if top_k is None else top_k
    todo = [i for i, c in enumerate(candidates) if worth_reranking(c, reranker.settings, k, bonus)]
    out = [list(c) for c in candidates]
    if not todo:
        return out
    contexts = []
    for i in todo:
        text, start, end, query = mention(i)
        contexts.append(mention_in_context(text, start, end, query=query, window=reranker.settings.window))
    for i, ranked in zip(todo, rerank(reranker, contexts, [candidates[i] for i in todo], names, top_k=k,
                                      batch_size=batch_size, bonus=bonus)):
        out[i] = ranked
    return out


def rerank_spans(reranker: Reranker, spans: Sequence[Any], texts: Sequence[str], candidates: Sequence[list],
                 names: Mapping[str, Sequence[str]], *, top_k: int,
                 batch_size: int = BATCH_SIZE, bonus: Mapping[str, float] | None = None) -> list[list[Candidate]]:
    """`rerank_mentions` for entities of spaCy docs: each span is read in a window of its doc's
    text, with `texts[i]` (what the linker searched) shown when it differs from the span's own text."""
    doc_texts: dict[int, str] = {}  # `Doc.text` joins every token anew on each call: once per doc

    def mention(i: int) -> tuple[str, int, int, str]:
        doc = spans[i].doc
        if id(doc) not in doc_texts:
            doc_texts[id(doc)] = doc.text
        return doc_texts[id(doc)], spans[i].start_char, spans[i].end_char, texts[i]

    return rerank_mentions(reranker, candidates, names, mention, top_k=top_k, batch_size=batch_size,
                           bonus=bonus)
