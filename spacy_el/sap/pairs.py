"""Synonym pairs for self-alignment pretraining, in the NeMo/SapBERT `pairs.tsv` format
(`concept_id<TAB>name_a<TAB>name_b`).

A concept's names are de-duplicated after normalisation (lowercase, collapsed whitespace), then
every unordered pair of distinct names is a positive pair, at most `max_pairs_per_concept` of them
(SapBERT: 50), sampled with a seeded RNG. Concepts with a single distinct name yield one
`(name, name)` pair (unlike SapBERT's UMLS script, which drops them): MEDIC has thousands of such
concepts, and with in-batch negatives they still teach the encoder to push look-alike names of
*other* concepts away; their positive term carries no gradient.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path

from spacy_el.ids import normalize_name
from spacy_el.io import InputError, atomic_write, read_lines
from spacy_el.kb.table import ConceptTable

Pair = tuple[str, str, str]


def make_pairs(table: ConceptTable, max_pairs_per_concept: int = 50, seed: int = 0,
               include_singletons: bool = True) -> list[Pair]:
    """All synonym pairs per concept (see module docstring), concepts in table order."""
    if max_pairs_per_concept < 1:
        raise InputError(f"max_pairs_per_concept={max_pairs_per_concept}: use a positive integer")
    names: dict[str, dict[str, str]] = {}
    for cid, name, _ in table.rows():
        names.setdefault(cid, {}).setdefault(normalize_name(name), name.strip())
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for cid, by_norm in names.items():
        distinct = list(by_norm.values())
        combos = list(itertools.combinations(distinct, 2))
        if not combos:
            if include_singletons and distinct:
                pairs.append((cid, distinct[0], distinct[0]))
            continue
        if len(combos) > max_pairs_per_concept:
            combos = rng.sample(combos, max_pairs_per_concept)
        pairs.extend((cid, a, b) for a, b in combos)
    if not pairs:
        raise InputError("the concept table yields no pairs: it has no concepts with names")
    return pairs


def write_pairs(path: str | Path, pairs: list[Pair]) -> None:
    """Write `pairs.tsv` atomically."""
    with atomic_write(path) as f:
        for i, row in enumerate(pairs, start=1):
            if len(row) != 3 or any("\t" in c or "\n" in c for c in row):
                raise InputError(f"pair {i} {row!r}: needs 3 fields without tabs or newlines")
            f.write("\t".join(row) + "\n")


def read_pairs(path: str | Path) -> list[Pair]:
    """Read `pairs.tsv`; a bad row raises an error naming file and line."""
    pairs: list[Pair] = []
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise InputError(
                f"{path}, line {lineno}: expected 3 tab-separated columns (concept_id, name_a, name_b), "
                f"found {len(cols)}"
            )
        cid, a, b = (c.strip() for c in cols)
        if not cid or not a or not b:
            raise InputError(f"{path}, line {lineno}: empty concept id or name")
        pairs.append((cid, a, b))
    if not pairs:
        raise InputError(f"{path}: no pairs found (empty file); make one with `spacy-el make-pairs`")
    return pairs
