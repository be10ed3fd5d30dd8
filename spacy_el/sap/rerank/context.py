"""The two texts a cross-encoder reads for one (mention, candidate) pair, written once so training,
evaluation and the linker build them the same way: the mention marked inside a window of its
document, and a concept's matched name followed by a few of its other names."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from spacy_el.ids import normalize_name
from spacy_el.kb.table import ConceptTable

#: Characters of document text kept on each side of the mention.
DEFAULT_WINDOW = 100
#: Names of a concept shown to the cross-encoder: the matched one first, then the concept's others.
DEFAULT_MAX_NAMES = 3


def mention_in_context(text: str, start: int, end: int, query: str | None = None,
                       window: int = DEFAULT_WINDOW) -> str:
    """`… left [mention] right …`: the mention in brackets within `window` characters each side,
    cut at whitespace so no word is split. When the linker searched another text for it (the long
    form of an abbreviation, one part of a composite mention), that text is shown too:
    `[SJS = Stevens-Johnson syndrome]`."""
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"mention offsets {start}:{end} outside a text of {len(text)} characters")
    left = text[max(0, start - window):start]
    right = text[end:end + window]
    if start - window > 0 and " " in left:
        left = left[left.index(" ") + 1:]
    if end + window < len(text) and " " in right:
        right = right[:right.rindex(" ")]
    mention = text[start:end]
    if query is not None and normalize_name(query) != normalize_name(mention):
        mention = f"{mention} = {query}"
    return " ".join(f"{left} [{mention}] {right}".split())


def candidate_text(name: str, others: Sequence[str], max_names: int = DEFAULT_MAX_NAMES) -> str:
    """The matched name, then up to `max_names - 1` other names of the concept, `;`-separated."""
    seen = {normalize_name(name)}
    out = [name]
    for other in others:
        if len(out) >= max_names:
            break
        if (key := normalize_name(other)) not in seen:
            seen.add(key)
            out.append(other)
    return " ; ".join(out)


def concept_names(table: ConceptTable, sources: Iterable[str] | None = None) -> Mapping[str, list[str]]:
    """Concept id → its names in table order (a KB's preferred name first). `sources` keeps
    only names from those sources (e.g. leave corpus aliases out)."""
    keep = set(sources) if sources is not None else None
    out: dict[str, list[str]] = {}
    for cid, name, source in table.rows():
        if keep is None or source in keep:
            out.setdefault(cid, []).append(name)
    return out
