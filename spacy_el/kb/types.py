"""Semantic types per concept, and searches restricted to concepts of allowed types.

`ConceptTypes` maps a concept id (as the index table spells it) to the type names it carries:
UMLS TUIs and their semantic groups (`T047`, `DISO`; from MRSTY via `spacy_el.umls`), Disease
Ontology branches (every `is_a` ancestor, `DOID:1287`; `from_obo`), MEDIC tree numbers and slim
mappings where a CTD `CTD_diseases.tsv` file carries them (`from_ctd_tsv`; the old pipe-separated
MEDIC dump has none), or any `concept_id<TAB>type|type` file (`from_tsv`). It is stored beside the
index as `types.tsv` and loaded with it.

`RowFilter` applies the allowed rows *inside* the FAISS search, so a restricted search still
returns `top_k` concepts whenever that many allowed concepts exist:

- `Flat`, `SQ…`, `PQ…` (flat codes), `IVF…`, `HNSW…`, and those types under a `PCA…`
  pre-transform or an `…,RFlat` refine stage: a `faiss.IDSelectorBitmap` passed as
  `SearchParameters(sel=…)`; FAISS skips disallowed rows while scanning. The type's own search
  settings (nprobe, efSearch, refine k_factor) are carried into those parameters, and a search
  that still comes back short is repeated deeper (HNSW: efSearch raised to the depth; IVF: all
  lists on the last pass).
- Any other type (GPU indexes, ID maps): the search fetches about depth · rows / allowed rows
  names, masks the disallowed ones and, while fewer than `top_k` concepts remain, searches
  deeper (up to the whole index): slower for rare types, never short.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from spacy_el.ids import id_owners, kb_spelling
from spacy_el.io import InputError, atomic_write, read_lines
from spacy_el.kb.faiss_utils import faiss

TYPES_FILE = "types.tsv"


class ConceptTypes:
    """concept id → type names (see the module docstring); `names` gives a type's readable name."""

    def __init__(self, types: Mapping[str, Iterable[str]] | None = None,
                 names: Mapping[str, str] | None = None) -> None:
        self.types: dict[str, tuple[str, ...]] = {cid: tuple(dict.fromkeys(ts)) for cid, ts in (types or {}).items()
                                                  if ts}
        self.names: dict[str, str] = dict(names or {})
        #: concept id → the line of the file it was read from (`from_tsv`), to name unmatched rows
        self.lines: dict[str, int] = {}
        self._masks: dict[tuple, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.types)

    def __contains__(self, concept_id: str) -> bool:
        return concept_id in self.types

    def get(self, concept_id: str) -> tuple[str, ...]:
        return self.types.get(concept_id, ())

    @property
    def vocabulary(self) -> set[str]:
        """Every type name some concept carries."""
        return {t for ts in self.types.values() for t in ts}

    def merged(self, other: "ConceptTypes") -> "ConceptTypes":
        """Both sources' types per concept (e.g. UMLS groups and DO branches)."""
        out = {cid: list(ts) for cid, ts in self.types.items()}
        for cid, ts in other.types.items():
            out.setdefault(cid, []).extend(ts)
        return ConceptTypes(out, {**self.names, **other.names})

    def restricted(self, concept_ids: Iterable[str]) -> "ConceptTypes":
        """Only these concepts (what an index keeps after removing some)."""
        keep = set(concept_ids)
        return ConceptTypes({c: ts for c, ts in self.types.items() if c in keep}, self.names)

    def spelt_as(self, concept_ids: Iterable[str]) -> tuple["ConceptTypes", list[str]]:
        """These types keyed by the ids as an index table spells them (`concept_ids`), matched the
        way `update-index --remove` matches ids: `MESH:D011125` or `D011125` find the concept
        `MESH:D011125|OMIM:175100`. Also returns the rows (`line N: id`, or the id) that match no
        concept, so a file spelt another way is named rather than silently typing nothing."""
        ids = list(concept_ids)
        owners, known = id_owners(ids), set(ids)
        out: dict[str, list[str]] = {}
        unmatched = []
        for cid, ts in self.types.items():
            spelt = cid if cid in known else kb_spelling(owners, cid)
            if spelt in known:
                out.setdefault(spelt, []).extend(ts)
            else:
                unmatched.append(f"line {self.lines[cid]}: {cid}" if cid in self.lines else cid)
        return ConceptTypes(out, self.names), unmatched

    def check(self, wanted: Iterable[str], setting: str) -> list[str]:
        """The wanted type names, or an error naming the setting and the known names."""
        wanted = list(wanted)
        if not isinstance(wanted, list) or not all(isinstance(t, str) for t in wanted):
            raise InputError(f"{setting}: give a list of type names, e.g. [\"DISO\"]")
        known = self.vocabulary
        unknown = [t for t in wanted if t not in known]
        if unknown:
            listed = ", ".join(sorted(known)[:30]) + (" …" if len(known) > 30 else "")
            raise InputError(f"{setting}: unknown type name(s) {', '.join(map(repr, unknown))}; this index's types "
                             f"are {listed or '(none: attach types with `spacy-el index-types`)'}")
        return wanted

    def allowed_rows(self, ids: Sequence[str], wanted: Iterable[str], setting: str = "types") -> np.ndarray:
        """A bool per table row: does its concept carry any wanted type? (cached per table)."""
        wanted = self.check(wanted, setting)
        key = (id(ids), len(ids), frozenset(wanted))
        if key not in self._masks:
            want = set(wanted)
            self._masks[key] = np.fromiter((not want.isdisjoint(self.types.get(cid, ())) for cid in ids),
                                           dtype=bool, count=len(ids))
        return self._masks[key]

    # ------------------------------------------------------------------ files
    def to_tsv(self, path: str | Path) -> None:
        """`concept_id<TAB>type|type` rows, then `#name<TAB>type<TAB>readable name` rows; atomic."""
        with atomic_write(path) as f:
            for cid, ts in sorted(self.types.items()):
                f.write(f"{cid}\t{'|'.join(ts)}\n")
            for t, name in sorted(self.names.items()):
                f.write(f"#name\t{t}\t{name}\n")

    @classmethod
    def from_tsv(cls, path: str | Path) -> "ConceptTypes":
        """Read `to_tsv`'s format (any `concept_id<TAB>type|type` file); bad rows name file and line."""
        types: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        lines: dict[str, int] = {}
        for lineno, line in read_lines(path):
            if not line.strip():
                continue
            cols = line.split("\t")
            if cols[0] == "#name" and len(cols) == 3:
                names[cols[1]] = cols[2].strip()
                continue
            if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
                raise InputError(f"{path}, line {lineno}: expected concept_id<TAB>type|type, found {line[:80]!r}")
            types.setdefault(cols[0].strip(), []).extend(t.strip() for t in cols[1].split("|") if t.strip())
            lines.setdefault(cols[0].strip(), lineno)
        out = cls(types, names)
        out.lines = lines
        return out

    @classmethod
    def from_obo(cls, path: str | Path, concept_ids: Iterable[str] | None = None) -> "ConceptTypes":
        """Disease Ontology branches: each term carries its own id and every `is_a` ancestor's, so
        `DOID:1287` (cardiovascular system disease) selects that whole branch. With `concept_ids`
        (an index table's ids, e.g. MEDIC's `MESH:…`/`OMIM:…`), the branches are carried over to
        them through the ontology's MESH/OMIM cross-references."""
        from spacy_el.kb.readers import ontology_terms

        types: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        xrefs: dict[str, list[str]] = {}
        for term in ontology_terms(path):
            if term.obsolete:
                continue
            branches = [t.id for t in term.superclasses() if not t.obsolete]
            types[term.id] = branches
            names[term.id] = term.name or term.id
            for x in term.xrefs:
                prefix, _, local = x.id.partition(":")
                if prefix.upper() in ("MESH", "OMIM"):
                    xrefs.setdefault(f"{prefix.upper()}:{local}", []).append(term.id)
        if concept_ids is None:
            return cls(types, names)
        out: dict[str, list[str]] = {}
        for cid in dict.fromkeys(concept_ids):
            for part in cid.split("|"):
                for doid in xrefs.get(part, [part] if part in types else []):
                    out.setdefault(cid, []).extend(types[doid])
        return cls(out, names)

    @classmethod
    def from_ctd_tsv(cls, path: str | Path) -> "ConceptTypes":
        """CTD's `CTD_diseases.tsv` (MEDIC): TreeNumbers (each with its ancestors' prefixes,
        `C04.588.180` also gives `C04.588` and `C04`) and SlimMappings per DiseaseID."""
        types: dict[str, list[str]] = {}
        for lineno, line in read_lines(path):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 6:
                raise InputError(f"{path}, line {lineno}: expected CTD_diseases.tsv columns (DiseaseName, DiseaseID, "
                                 "AltDiseaseIDs, Definition, ParentIDs, TreeNumbers, …); the pipe-separated MEDIC "
                                 "dump has no tree numbers")
            cid = cols[1].strip()
            out = types.setdefault(cid, [])
            for tree in filter(None, cols[5].split("|")):
                parts = tree.split(".")
                out.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if len(cols) > 8:
                out.extend(s.strip() for s in cols[8].split("|") if s.strip())
        return cls(types)


# ---------------------------------------------------------------------- search
class RowFilter:
    """Allowed table rows as a FAISS selector for one index (see the module docstring)."""

    def __init__(self, index: faiss.Index, allowed: np.ndarray) -> None:
        self.index = index
        self.allowed = np.asarray(allowed, dtype=bool)
        self.n_allowed = int(self.allowed.sum())
        self._bitmap = np.packbits(self.allowed, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(self.allowed), faiss.swig_ptr(self._bitmap))
        self.inside = _params(index, self.selector, depth=1, last=False) is not None
        #: whether a selector search that returns fewer rows than asked has seen every allowed row
        self.exact = self.inside and _exact(index)

    def search(self, queries: np.ndarray, depth: int, last: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores and rows (disallowed rows as -1) and, per query, whether every allowed row
        within reach was seen (so a short answer is final)."""
        ntotal = self.index.ntotal
        if self.inside:
            params = _params(self.index, self.selector, depth=depth, last=last)
            scores, rows = self.index.search(queries, depth, params=params)
            complete = (rows[:, -1] < 0) & self.exact
        else:
            wide = min(ntotal, math.ceil(depth * ntotal / max(self.n_allowed, 1)))
            scores, rows = self.index.search(queries, wide)
            complete = np.full(len(queries), wide >= ntotal)
        rows = rows.copy()
        rows[(rows >= 0) & ~self.allowed[np.clip(rows, 0, None)]] = -1
        return scores, rows, complete


def _exact(index: faiss.Index) -> bool:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return _exact(index.index)
    if isinstance(index, faiss.IndexRefine):
        return _exact(index.base_index)
    return isinstance(index, faiss.IndexFlatCodes)


def _params(index: faiss.Index, sel: faiss.IDSelector, depth: int, last: bool) -> faiss.SearchParameters | None:
    """Search parameters carrying `sel` and the index's own settings, or None for a type that
    takes no selector."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _params(index.index, sel, depth, last)
        return None if inner is None else _keep(faiss.SearchParametersPreTransform(index_params=inner), inner)
    if isinstance(index, faiss.IndexRefine):
        inner = _params(index.base_index, sel, depth, last)
        if inner is None:
            return None
        return _keep(faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=inner), inner)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=sel, nprobe=index.nlist if last else index.nprobe,
                                         max_codes=index.max_codes)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=sel, efSearch=max(index.hnsw.efSearch, depth))
    if isinstance(index, faiss.IndexFlatCodes):
        return faiss.SearchParameters(sel=sel)
    return None


def _keep(params: faiss.SearchParameters, inner: faiss.SearchParameters) -> faiss.SearchParameters:
    """SWIG does not keep the nested parameters alive: hold them on the outer object."""
    params.referenced_objects = [inner]
    return params
