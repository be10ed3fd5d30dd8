"""The tagger's alternatives as entities: `bilstm_ner` with `alternatives_key = "ner_alternatives"`
(`ALTERNATIVES_KEY`) writes the entity spans its best path left out but its CRF still finds
likely to `doc.spans["ner_alternatives"]`, their probabilities in the group's `attrs["scores"]`.
`sap_linker` reads that group whenever a doc has it: before linking, each span that overlaps no
entity (most probable first) and whose best cosine reaches `alternatives_threshold` becomes an
entity, and is then linked as any other: the KB settles what the tagger could not (TaggerOne's
joint NER and normalisation, as a decision over the tagger's n-best spans). The threshold sits
above the NIL threshold, because a span the tagger doubts needs stronger evidence from the KB than
one it chose."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Set, Tuple

from spacy.tokens import Doc, Span

#: The span group of the tagger's alternatives the linker reads (`bilstm_ner`'s `alternatives_key`).
ALTERNATIVES_KEY = "ner_alternatives"


def offered(docs: Sequence[Doc], labels: Set[str]) -> Tuple[List[List[Span]], List[Set[int]]]:
    """Per doc, its alternatives of `labels` (all when empty) that overlap no entity, most probable
    first, and the tokens its entities take."""
    spans_out: List[List[Span]] = []
    taken: List[Set[int]] = []
    for doc in docs:
        group = doc.spans[ALTERNATIVES_KEY] if ALTERNATIVES_KEY in doc.spans else []
        scores = group.attrs.get("scores") if len(group) else None
        order = sorted(range(len(group)), key=lambda i: -scores[i]) if scores else range(len(group))
        taken.append({t for ent in doc.ents for t in range(ent.start, ent.end)})
        spans_out.append([group[i] for i in order if (not labels or group[i].label_ in labels)
                          and not taken[-1].intersection(range(group[i].start, group[i].end))])
    return spans_out, taken


def adopt(docs: Sequence[Doc], spans: List[List[Span]], taken: List[Set[int]],
          best_score: Callable[[Span], Optional[float]], floor: float) -> None:
    """Add to each doc's entities its offered spans whose best cosine (`best_score`, None without
    candidates) reaches `floor`, in order, skipping any that overlaps one adopted before it."""
    for doc, offered_spans, used in zip(docs, spans, taken):
        adopted = []
        for span in offered_spans:
            score = best_score(span)
            if score is not None and score >= floor and not used.intersection(range(span.start, span.end)):
                adopted.append(span)
                used.update(range(span.start, span.end))
        if adopted:
            doc.ents = list(doc.ents) + adopted
