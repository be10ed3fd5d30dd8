"""Composite mentions: one entity that names several concepts through coordination, as
"breast and ovarian cancer" (breast cancer + ovarian cancer) or "colorectal, endometrial and
ovarian cancers". NCBI-disease annotates them as `CompositeMention` with `|`-joined ids, BC5CDR
with `|`-joined ids and the part texts in a 7th column.

`split_coordination` expands an entity's text into its parts (a shared trailing head, "breast
and ovarian cancer" → "breast cancer", "ovarian cancer"; or a shared leading head ending in
"of", "impairments of learning and memory" → "impairments of learning", "impairments of
memory"). `sap_linker` links the whole text and each part, and keeps the parts only when every
part links at least as well as the whole (`prefer_parts`): "hereditary breast and ovarian
cancer" is one syndrome, which a KB name or a corpus alias of the whole text shows.

A split entity gets `ent.kb_id_` = its parts' concepts joined with `|` in part order (the
corpora's convention; a concept several parts share appears once; parts below the threshold are
left out), `ent._.kb_parts` = `[(part text, [Candidate, …]), …]` and `ent._.kb_candidates` = the
best candidate of each part. A concept whose id itself holds `|` (MEDIC's one concept
`OMIM:114480|MESH:D001943`) contributes all its ids, so a prediction is scored as the corpora's
`|` ids are (any shared id matches); the part structure is in `kb_parts`.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence, Tuple

from spacy.tokens import Span

#: `, and `, `, or `, `, and/or `, ` and `, ` or `, ` and/or `, `, `.
_CONJ = re.compile(r"\s*,\s*(?:and/or|and|or)\s+|\s*,\s*|\s+(?:and/or|and|or)\s+")
#: The extension that holds the parts of a split entity (in `doc.user_data`, like `kb_candidates`).
PARTS = "kb_parts"

Part = Tuple[str, List[Any]]


def split_coordination(text: str) -> Optional[List[str]]:
    """The part texts of a coordinated mention, or None when it is not one (see module docstring)."""
    segments = [s for s in _CONJ.split(text.strip())]
    if len(segments) < 2 or any(not s.strip() for s in segments):
        return None
    first = segments[0]
    of = first.rfind(" of ")
    if of > 0 and all(len(s.split()) <= 2 for s in segments[1:]):
        head = first[:of + 4]
        return [first] + [head + s for s in segments[1:]]
    width = min(len(s.split()) for s in segments[:-1])
    last = segments[-1].split()
    if len(last) <= width:
        return None  # nothing left to share: "cancer and diabetes" are two whole mentions
    head = " ".join(last[width:])
    return [f"{s} {head}" for s in segments[:-1]] + [segments[-1]]


def prefer_parts(whole: Sequence[Any], parts: Sequence[Sequence[Any]]) -> bool:
    """Keep the split when every part's best cosine is above the whole text's best cosine."""
    if not parts or any(not p for p in parts):
        return False
    best_whole = whole[0].score if whole else -1.0
    return min(p[0].score for p in parts) > best_whole


def joined_id(parts: Sequence[Sequence[Any]], threshold: float, nil_id: str) -> str:
    """`|`-joined ids of the parts' best concepts above `threshold` (each id once), or `nil_id`."""
    ids = [i for p in parts if p and p[0].score >= threshold for i in p[0].concept_id.split("|")]
    return "|".join(dict.fromkeys(ids)) or nil_id


def _get_parts(span: Span) -> Optional[List[Part]]:
    from spacy_el.kb.ranking import Candidate

    value = span.doc.user_data.get(("._.", PARTS, span.start_char, span.end_char))
    if not value:
        return value
    return [(text, [c if type(c) is Candidate else Candidate(*c) for c in cands]) for text, cands in value]


def _set_parts(span: Span, value: Optional[List[Part]]) -> None:
    span.doc.user_data[("._.", PARTS, span.start_char, span.end_char)] = value


Span.set_extension(PARTS, getter=_get_parts, setter=_set_parts, force=True)
