"""`el_abbreviation_detector`: find abbreviation definitions in a doc, so a short form such as
"APC" can be linked by the text of its long form "adenomatous polyposis coli".

The algorithm is Schwartz & Hearst (2003), "A simple algorithm for identifying abbreviation
definitions in biomedical text" (PSB 2003): a definition is "long form (SF)" or, less often,
"SF (long form)"; the short form's characters must appear in order in the long form, read right
to left, with its first character starting a word; of the matches, the words whose initials
spell the short form are preferred over S&H's shortest one. scispaCy's `AbbreviationDetector`
(allenai/scispacy, Apache-2.0) was read as a reference; this implementation matches characters
on the doc's own text (not re-joined tokens), stays within a sentence when sentences are set,
and assigns a fresh list to every doc.

Sets `doc._.el_abbreviations`: `[(short Span, long Span), ...]` for every occurrence of every
defined short form in the doc (the definition itself included), in text order, and
`span._.el_long_form` on each of those short-form spans. Both are read from token offsets kept in
`doc.user_data`, so they survive `Doc.to_bytes`/`from_bytes` and `nlp.pipe(n_process=…)` (a
Span itself cannot be serialized).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from spacy.language import Language
from spacy.tokens import Doc, Span

#: Short forms are 2–10 characters and at most two words (Schwartz & Hearst).
MIN_SF_CHARS, MAX_SF_CHARS, MAX_SF_WORDS = 2, 10, 2
#: A parenthesis longer than this (in tokens) is not a definition.
MAX_PAREN_TOKENS = 12


#: Where the pairs live: `doc.user_data[PAIRS] = [(short start, short end, long start, long end), ...]`
#: in token offsets (plain integers, which msgpack carries).
PAIRS = ("spacy_el", "abbreviations")


def _get_abbreviations(doc: Doc) -> list[tuple[Span, Span]]:
    return [(doc[a:b], doc[c:d]) for a, b, c, d in doc.user_data.get(PAIRS, ())]


def _set_abbreviations(doc: Doc, pairs: Iterable[tuple[Span, Span]]) -> None:
    doc.user_data[PAIRS] = [(short.start, short.end, long.start, long.end) for short, long in pairs]


def _get_long_form(span: Span) -> Span | None:
    for a, b, c, d in span.doc.user_data.get(PAIRS, ()):
        if a == span.start and b == span.end:
            return span.doc[c:d]
    return None


def _set_long_form(span: Span, long: Span | None) -> None:
    pairs = [p for p in span.doc.user_data.get(PAIRS, ()) if (p[0], p[1]) != (span.start, span.end)]
    if long is not None:
        pairs.append((span.start, span.end, long.start, long.end))
    span.doc.user_data[PAIRS] = sorted(pairs)


def _register_extensions() -> None:
    # Docs that never went through the detector have no pairs: empty list, no long forms.
    Doc.set_extension("el_abbreviations", getter=_get_abbreviations, setter=_set_abbreviations, force=True)
    Span.set_extension("el_long_form", getter=_get_long_form, setter=_set_long_form, force=True)


def is_short_form(text: str) -> bool:
    """Schwartz & Hearst's short-form test: 2–10 chars, ≤ 2 words, starts alphanumeric, has a letter."""
    return (
        MIN_SF_CHARS <= len(text) <= MAX_SF_CHARS
        and len(text.split()) <= MAX_SF_WORDS
        and text[0].isalnum()
        and any(c.isalpha() for c in text)
    )


def best_long_form_start(short: str, long: str) -> int | None:
    """Start offset in `long` of the shortest suffix that defines `short`, or None.

    Walk both strings right to left: every alphanumeric character of the short form must be
    found in order in the long form, and its first character must begin a word there."""
    s, l = len(short) - 1, len(long) - 1
    while s >= 0:
        c = short[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while l >= 0 and (long[l].lower() != c or (s == 0 and l > 0 and long[l - 1].isalnum())):
            l -= 1
        if l < 0:
            return None
        l -= 1
        s -= 1
    return l + 1


#: A long form never runs across these (sentence ends, clause breaks).
_BREAKS = {".", "!", "?", ";"}


def _max_long_words(short_chars: int) -> int:
    """Schwartz & Hearst's bound on the long form: min(|SF| + 5, 2·|SF|) words."""
    return min(short_chars + 5, short_chars * 2)


def _window_start(doc: Doc, paren: int, short_chars: int, has_sents: bool) -> int:
    """First token of the long-form search window before `(`: at most the S&H word bound,
    not before the sentence start (or the last sentence-ending token when sentences are unset)."""
    start = max(paren - _max_long_words(short_chars), 0)
    if has_sents:
        start = max(start, doc[paren].sent.start)
    for j in range(paren - 1, start - 1, -1):
        if doc[j].text in _BREAKS:
            return j + 1
    return start


def _initials_start(doc: Doc, long_start: int, long_end: int, short: str) -> int | None:
    """First token of the words ending at `long_end` whose initials spell the short form, or None.

    S&H keep the shortest match, which drops a leading word whose letter the short form
    repeats ("attenuated adenomatous polyposis coli (AAPC)" → "adenomatous polyposis coli");
    when the initials spell the short form exactly, that longer form is the definition."""
    letters = [c.lower() for c in short if c.isalnum()]
    words = [t for t in doc[long_start:long_end] if t.text[0].isalnum()]
    if not letters or len(words) < len(letters):
        return None
    tail = words[len(words) - len(letters):]
    return tail[0].i if [t.text[0].lower() for t in tail] == letters else None


def _definition(doc: Doc, long_start: int, long_end: int, short: Span) -> Span | None:
    """The long-form span inside tokens [long_start, long_end) that defines `short`, if any."""
    if long_end <= long_start:
        return None
    first, last = doc[long_start], doc[long_end - 1]
    text = doc[long_start:long_end].text  # (`doc.text` would rebuild the whole text each time)
    offset = best_long_form_start(short.text, text)
    if offset is None:
        return None
    long = doc.char_span(first.idx + offset, last.idx + len(last), alignment_mode="expand")
    initials = _initials_start(doc, long_start, long_end, short.text)
    if long is not None and initials is not None and initials < long.start:
        long = doc[initials:long.end]
    if long is None or len(long.text) <= len(short.text) or long.text.count("(") != long.text.count(")"):
        return None
    if short.text.lower() in {t.lower_ for t in long}:  # "ATM gene (ATM)" is not a definition
        return None
    return long


def find_definitions(doc: Doc) -> list[tuple[Span, Span]]:
    """(short form, long form) for each definition in the doc, in text order."""
    out: list[tuple[Span, Span]] = []
    i, n = 0, len(doc)
    has_sents = doc.has_annotation("SENT_START")  # scans the doc: once, not per parenthesis
    while i < n:
        if doc[i].text != "(":
            i += 1
            continue
        close = next((j for j in range(i + 1, min(i + MAX_PAREN_TOKENS + 2, n))
                      if doc[j].text in {"(", ")"}), None)
        if close is None or doc[close].text != ")" or close == i + 1:
            i += 1
            continue
        inside = doc[i + 1:close]
        # "long form (SF, other text)": the short form ends at the first ',' or ';'.
        cut = next((t.i for t in inside if t.text in {",", ";"}), close)
        short = doc[i + 1:cut]
        found = None
        if short.text and is_short_form(short.text):
            long = _definition(doc, _window_start(doc, i, len(short.text), has_sents), i, short)
            found = (short, long) if long is not None else None
        elif i > 0 and is_short_form(doc[i - 1].text) and len(inside) > MAX_SF_WORDS:
            # "SF (long form)": the whole parenthesis up to the first ',' or ';' is the long form.
            short = doc[i - 1:i]
            long = _definition(doc, i + 1, cut, short)
            if (long is not None and long.start == i + 1
                    and len(long) <= _max_long_words(len(short.text))
                    and not any(t.text in _BREAKS for t in long)):
                found = (short, long)
        if found:
            out.append(found)
        i = close + 1
    return out


def _occurrences(doc: Doc, definitions: Iterable[tuple[Span, Span]]) -> list[tuple[Span, Span]]:
    """Every token-exact occurrence of each defined short form (first definition wins),
    except those inside a long form."""
    by_first: dict[str, list[tuple[tuple[str, ...], Span]]] = {}
    seen: set[tuple[str, ...]] = set()
    for short, long in definitions:
        key = tuple(t.text for t in short)
        if key not in seen:
            seen.add(key)
            by_first.setdefault(key[0], []).append((key, long))
    longs = [long for _, long in definitions]
    out = []
    for tok in doc:
        for key, long in by_first.get(tok.text, ()):
            end = tok.i + len(key)
            if end <= len(doc) and tuple(t.text for t in doc[tok.i:end]) == key and not any(
                    l.start <= tok.i < l.end for l in longs):
                out.append((doc[tok.i:end], long))
    return out


_register_extensions()


def propagate_entities(doc: Doc, pairs: Iterable[tuple[Span, Span]]) -> None:
    """Make each short form an entity when its long form ends in an entity: label of that entity,
    only where the short form overlaps no entity already."""
    ends = {ent.end: ent.label_ for ent in doc.ents}
    ents = list(doc.ents)
    taken = {i for ent in ents for i in range(ent.start, ent.end)}
    for short, long in pairs:
        label = ends.get(long.end)
        if label is None or not any(ent.start >= long.start and ent.end == long.end for ent in ents):
            continue
        if taken.isdisjoint(range(short.start, short.end)):
            ents.append(Span(doc, short.start, short.end, label=label))
            taken.update(range(short.start, short.end))
    if len(ents) != len(doc.ents):
        doc.ents = sorted(ents, key=lambda e: e.start)


class AbbreviationDetector:
    """Stateless pipeline component: sets `doc._.el_abbreviations` and `span._.el_long_form`.

    With `propagate_ents`, a short form whose long form ends in an entity becomes an entity of the
    same label wherever it occurs (and no entity overlaps it): a tagger that found "familial
    adenomatous polyposis" then also has every "FAP" of the abstract, as annotators mark them."""

    def __init__(self, nlp: Language, name: str = "el_abbreviation_detector", *, propagate_ents: bool = False):
        self.name = name
        self.propagate_ents = propagate_ents
        _register_extensions()

    def __call__(self, doc: Doc) -> Doc:
        pairs = _occurrences(doc, find_definitions(doc)) if len(doc) else []
        doc._.el_abbreviations = pairs  # which also gives each short form its `el_long_form`
        if self.propagate_ents and pairs:
            propagate_entities(doc, pairs)
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterable[Doc]:
        for doc in docs:
            yield self(doc)

    # No state to save: the methods exist so `nlp.to_disk`/`from_disk` round trips are explicit.
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        return None

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> "AbbreviationDetector":
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return b""

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "AbbreviationDetector":
        return self


@Language.factory(
    "el_abbreviation_detector",
    assigns=["doc._.el_abbreviations", "span._.el_long_form", "doc.ents"],
    default_config={"propagate_ents": False},
)
def make_abbreviation_detector(nlp: Language, name: str, propagate_ents: bool) -> AbbreviationDetector:
    """Schwartz & Hearst abbreviation detection; put it after the NER and before the linker."""
    return AbbreviationDetector(nlp, name, propagate_ents=propagate_ents)
