"""`kb_span_extender`: widens each entity the tagger found to the longest knowledge-base name that
contains it, when that adds at most `max_extra_tokens` tokens.

A tagger trained on a few hundred abstracts often stops short of a name's modifiers ("migraine"
for *migraine without aura*, "scleroderma" for *localized scleroderma*, "hyperglycinemia" for
*nonketotic hyperglycinemia*), and the linker then links the broader concept; a lexicon knows
where those names end (TaggerOne's lexicon features serve the same purpose). The KB names are the
ones `kb_gazetteer` already marks in `doc.spans[spans_key]` (the same KB the tagger reads as a
feature), so no second list of names is kept: this component has no state beyond its settings.

It runs after the NER and before `el_abbreviation_detector` / `sap_linker`. Entities it would make
overlap are resolved longest first (`spacy.util.filter_spans`).
"""
from __future__ import annotations

from typing import Iterable, List

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans


@Language.factory(
    "kb_span_extender",
    assigns=["doc.ents"],
    requires=["doc.ents", "doc.spans"],
    default_config={"spans_key": "kb_names", "max_extra_tokens": 3, "labels": []},
)
def make_kb_span_extender(nlp: Language, name: str, spans_key: str, max_extra_tokens: int,
                          labels: List[str]) -> "KBSpanExtender":
    """Create a `kb_span_extender` reading the KB names `kb_gazetteer` put in `doc.spans[spans_key]`."""
    return KBSpanExtender(name, spans_key=spans_key, max_extra_tokens=max_extra_tokens, labels=labels)


class KBSpanExtender:
    """Entities (of `labels`; all when empty) widened to the longest containing KB name."""

    def __init__(self, name: str = "kb_span_extender", *, spans_key: str = "kb_names", max_extra_tokens: int = 3,
                 labels: Iterable[str] = ()) -> None:
        if max_extra_tokens < 1:
            raise ValueError(f"[components.{name}] max_extra_tokens = {max_extra_tokens}: use an integer >= 1 "
                             "(the most tokens a KB name may add to an entity)")
        self.name = name
        self.spans_key = spans_key
        self.max_extra_tokens = max_extra_tokens
        self.labels = set(labels)

    def __call__(self, doc: Doc) -> Doc:
        if not doc.ents:
            return doc
        if self.spans_key not in doc.spans:
            raise ValueError(f"{self.name}: doc.spans[{self.spans_key!r}] is not set; put a `kb_gazetteer` with "
                             f"spans_key = \"{self.spans_key}\" before it in the pipeline, or set "
                             f"[components.{self.name}] spans_key to the key your gazetteer writes")
        names = doc.spans[self.spans_key]
        ents = [self._widest(ent, names) for ent in doc.ents]
        doc.ents = filter_spans(ents)
        return doc

    def _widest(self, ent: Span, names: Iterable[Span]) -> Span:
        if self.labels and ent.label_ not in self.labels:
            return ent
        best_start, best_end = ent.start, ent.end
        for name in names:
            longer = name.end - name.start > best_end - best_start
            if longer and name.start <= ent.start and name.end >= ent.end \
                    and (name.end - name.start) - len(ent) <= self.max_extra_tokens:
                best_start, best_end = name.start, name.end
        if (best_start, best_end) == (ent.start, ent.end):
            return ent
        return Span(ent.doc, best_start, best_end, label=ent.label)
