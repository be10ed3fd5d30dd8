"""Concept identifiers and name keys: one canonical spelling so KB ids and corpus ids compare
equal, the KB's own spelling of a corpus id, and the one normal form of names and mentions.

MeSH ids become `MESH:D012345`, bare numbers and `OMIM:n`/`MIM:n` become `OMIM:n`, other
prefixed ids (`DOID:9352`, `C0011849` CUIs) keep their spelling. A field that holds several
ids (`|` alternatives or composite parts, `+` joint ids) is split into a set.
"""
from __future__ import annotations

import re
from typing import Iterable

_MESH = re.compile(r"^(?:MESH:|MSH:)?([CD](?:\d{6}|\d{9}))$", re.IGNORECASE)
_OMIM = re.compile(r"^(?:OMIM:|MIM:)?(\d{4,7})$", re.IGNORECASE)


def normalize_id(raw: str) -> str:
    """Canonical spelling of one concept id (`D012345` → `MESH:D012345`, `145250` → `OMIM:145250`)."""
    s = raw.strip()
    if m := _MESH.match(s):
        return "MESH:" + m.group(1).upper()
    if m := _OMIM.match(s):
        return "OMIM:" + m.group(1)
    return s


def id_problem(concept_id: str) -> str | None:
    """What makes `concept_id` not look like an id, or None. Each of its `|`/`+` parts is
    `PREFIX:LOCAL` with both parts non-empty, or a bare id (`C0011849`, `D003920`) without
    whitespace. Catches a column shifted by a stray tab (`MESH:<TAB>D003920<TAB>name` read as the
    id `MESH:` and the name `D003920`)."""
    for part in re.split(r"[|+]", concept_id):
        prefix, sep, local = part.strip().partition(":")
        if not part.strip():
            return "has an empty part"
        if sep and (not prefix.strip() or not local.strip()):
            return f"has no {'prefix' if not prefix.strip() else 'local part'} in {part.strip()!r} (PREFIX:LOCAL)"
        if not sep and len(part.split()) > 1:
            return "holds whitespace"
    return None


def split_ids(field: str) -> list[str]:
    """All canonical ids in a field such as `D003110|D009369` or `D01+D02`, in order, no repeats."""
    out: list[str] = []
    for part in re.split(r"[|+]", field):
        if part.strip() and (norm := normalize_id(part)) not in out:
            out.append(norm)
    return out


def ids_match(predicted: str, gold: str) -> bool:
    """SapBERT's protocol: correct when the predicted concept shares any id with the gold field."""
    return bool(set(split_ids(predicted)) & set(split_ids(gold)))


def id_owners(ids: Iterable[str]) -> dict[str, str]:
    """Each single id → the concept id as the KB spells it (`MESH:C567755` → `MESH:C567755|OMIM:613097`).
    `ids` are a concept table's ids (repeats allowed); the first concept holding an id owns it."""
    owner: dict[str, str] = {}
    for cid in dict.fromkeys(ids):
        for part in split_ids(cid):
            owner.setdefault(part, cid)
    return owner


def kb_spelling(owners: dict[str, str], concept_id: str) -> str:
    """`concept_id` as the KB spells it when all its ids belong to one KB concept, else unchanged."""
    found = {owners.get(part) for part in split_ids(concept_id)}
    return found.pop() if len(found) == 1 and None not in found else concept_id


def normalize_name(text: str) -> str:
    """Lowercase with whitespace collapsed: the one form under which names and mentions are
    compared and deduplicated (synonym pairs, corpus aliases, UMLS names, the index's ties and
    the linker's name lookup all use it, so they agree on what "the same name" is)."""
    return " ".join(text.lower().split())
