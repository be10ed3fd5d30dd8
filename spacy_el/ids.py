"""Concept identifiers: one canonical spelling so KB ids and corpus ids compare equal.

MeSH ids become `MESH:D012345`, bare numbers and `OMIM:n`/`MIM:n` become `OMIM:n`, other
prefixed ids (`DOID:9352`, `C0011849` CUIs) keep their spelling. A field that holds several
ids (`|` alternatives or composite parts, `+` joint ids) is split into a set.
"""
from __future__ import annotations

import re

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
