"""Enriching one concept table with the names of a second KB through cross-references: Disease
Ontology synonyms become names of the MEDIC concepts their terms cross-reference (MESH/OMIM), so
the index finds a concept by more of the ways it is written. A pure table operation: the readers
give the tables and the cross-references, the index is built from the result.

Every merged name keeps its `source` (the second KB's file name), so candidates and `meta.json`
say where a name came from. A cross-reference to an id no concept of the first table holds is
counted, not an error: ontologies reference far more of MeSH/OMIM than a disease vocabulary keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spacy_el.ids import id_owners, normalize_name, split_ids
from spacy_el.io import InputError
from spacy_el.kb.table import ConceptTable

#: Formats of the second KB: an OBO ontology with MESH/OMIM xrefs (Disease Ontology), or a table whose
#: own ids are MeSH/OMIM ids (MEDIC, or `id<TAB>name` rows such as UMLS MSH/OMIM atoms).
MERGE_FORMATS = ("obo-xrefs", "medic", "tsv")


@dataclass
class MergeStats:
    """What a merge did: names added (new to their concept), terms of the second KB that reached a
    concept, cross-references (and terms) that reached none."""

    source: str = ""
    n_names_added: int = 0
    n_names_known: int = 0
    n_terms: int = 0
    n_terms_matched: int = 0
    n_terms_without_xrefs: int = 0
    n_xrefs: int = 0
    n_xrefs_unmatched: int = 0
    unmatched_examples: list[str] = field(default_factory=list)


def merge_by_xrefs(base: ConceptTable, other: ConceptTable, xrefs: dict[str, list[str]], source: str,
                   *, max_examples: int = 10) -> tuple[ConceptTable, MergeStats]:
    """`base` plus every name of `other` under each `base` concept one of its term's
    cross-references (`xrefs[term_id]`, canonical ids) belongs to. Names a concept already has
    (up to case and spacing) are not repeated; new rows carry `source`. `base` is not changed."""
    owners = id_owners(base.ids)
    known: dict[str, set[str]] = {}
    for cid, name in zip(base.ids, base.names):
        known.setdefault(cid, set()).add(normalize_name(name))
    names_of: dict[str, list[str]] = {}
    for tid, name in zip(other.ids, other.names):
        names_of.setdefault(tid, []).append(name)
    merged = ConceptTable(list(base.ids), list(base.names), list(base.sources))
    stats = MergeStats(source=source, n_terms=len(names_of))
    for tid, names in names_of.items():
        refs = xrefs.get(tid, [])
        if not refs:
            stats.n_terms_without_xrefs += 1
            continue
        targets: list[str] = []
        for ref in refs:
            stats.n_xrefs += 1
            owner = owners.get(ref)
            if owner is None:
                stats.n_xrefs_unmatched += 1
                if len(stats.unmatched_examples) < max_examples:
                    stats.unmatched_examples.append(f"{tid} → {ref}")
            elif owner not in targets:
                targets.append(owner)
        stats.n_terms_matched += bool(targets)
        for cid in targets:
            have = known.setdefault(cid, set())
            for name in names:
                key = normalize_name(name)
                if key in have:
                    stats.n_names_known += 1
                    continue
                have.add(key)
                merged.add(cid, name, source)
                stats.n_names_added += 1
    return merged, stats


def read_merge_kb(path: str | Path, fmt: str = "obo-xrefs") -> tuple[ConceptTable, dict[str, list[str]]]:
    """The second KB of a merge and its cross-references: an OBO ontology's MESH/OMIM xrefs, or,
    for `medic`/`tsv`, each concept's own ids (its names then join the base concept sharing an id)."""
    from spacy_el.kb.readers import read_kb, read_obo_with_xrefs

    if fmt not in MERGE_FORMATS:
        raise InputError(f"--merge-format {fmt!r}: use one of {', '.join(MERGE_FORMATS)}")
    if fmt == "obo-xrefs":
        return read_obo_with_xrefs(path)
    table = read_kb(path, fmt)
    return table, {cid: split_ids(cid) for cid in dict.fromkeys(table.ids)}
