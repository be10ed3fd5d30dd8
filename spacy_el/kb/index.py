"""ConceptIndex: a FAISS index over the L2-normalised vectors of every KB name, plus the concept
table that maps index rows back to concept ids, names and provenance.

Inner product over unit vectors is cosine, so every FAISS index type built with
`METRIC_INNER_PRODUCT` (`Flat`, `HNSW32`, `IVF1024,Flat`, `PCA128,SQ8`, `IVF1024,PQ64,RFlat`…)
ranks names by cosine. A concept has many names, so `search` looks deeper than k names and keeps
each concept's best name (`spacy_el.kb.ranking.collapse`, which also applies the corpus prior):
callers get the top-k *concepts*.

On disk an index is a directory (`spacy_el.kb.files`): `index.faiss`, the concept table
(concept_id, name, source) as memory-mapped `columns/` with its row codes (`spacy_el.kb.table`),
`meta.json` (encoder fingerprint and dim, metric, counts, index type, search settings, alias files)
and, with a corpus prior, `prior.tsv`; a compressed index built with `store_vectors` also keeps
every name's vector on disk for exact rescoring (`vectors.f16`, see `spacy_el.kb.vectors`). It is
written atomically and memory-mapped on load where FAISS allows it, so a pipeline holding a large
KB loads fast and shares pages between processes. FAISS plumbing lives in `faiss_utils.py`,
ranking in `ranking.py`, the files in `files.py`, index building from KB files in
`spacy_el.build`; this module is the one class whose build and search share its state.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from spacy_el.io import InputError, atomic_dir, prefetch_files
from spacy_el.kb.faiss_utils import apply_search_settings, default_settings, faiss, faiss_msg, maybe_gpu, sub_indexes
from spacy_el.kb.files import FORMAT_VERSION, IndexParts, encoder_meta, read_parts, write_parts
from spacy_el.kb.ranking import (DEFAULT_PRIOR_WEIGHT, KB_SOURCE, Candidate, RowCodes, align_alias_ids, align_prior,
                                  check_prior_weight, collapse, concept_bonus, prior_bonus, row_codes)
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.types import ConceptTypes, RowFilter
from spacy_el.kb.vectors import VectorStore
from spacy_el.models import Encoder

__all__ = ["ConceptIndex", "Candidate", "DEFAULT_PRIOR_WEIGHT", "KB_SOURCE", "align_alias_ids"]

#: How many names per wanted concept the first search pass fetches before collapsing.
DEPTH_FACTOR = 8
#: At most this many names train an IVF/PQ/PCA index (a seeded sample; FAISS subsamples anyway).
MAX_TRAIN = 200_000


class ConceptIndex:
    """FAISS index + concept table + metadata (see module docstring)."""

    def __init__(self, table: ConceptTable, index: faiss.Index, meta: dict[str, Any], *,
                 use_gpu: bool | str = "auto", prior: dict[str, int] | None = None,
                 vectors: VectorStore | None = None) -> None:
        if index.ntotal != len(table):
            raise InputError(f"concept index has {index.ntotal} vectors but its table {len(table)} rows; "
                             "rebuild the index")
        self.table = table
        self.meta = meta
        self.cpu_index = index
        self._name_rows: tuple[Callable[[str], str], dict[str, int]] | None = None
        self._codes: tuple[ConceptTable, RowCodes] | None = None
        self._bonus: tuple[tuple, np.ndarray] | None = None
        #: concept id (as the table spells it) → train mentions linked to it (see `spacy_el.kb.ranking`)
        self.prior: dict[str, int] = dict(prior or {})
        #: semantic types per concept (`types.tsv`; see `spacy_el.kb.types`), None when not attached
        self.types: ConceptTypes | None = None
        #: every name's vector (float16, on disk when loaded) to rescore the compressed index's
        #: candidates exactly; None for indexes that hold exact vectors or were built without
        self.vectors = vectors
        #: the thread reading the index's files into the page cache (`load(prefetch=True)`), or None
        self.prefetching: threading.Thread | None = None
        if vectors is not None and len(vectors) != index.ntotal:
            raise InputError(f"concept index has {index.ntotal} vectors but its stored vectors {len(vectors)} rows; "
                             "rebuild the index")
        self.index, self.on_gpu = maybe_gpu(index, use_gpu)
        apply_search_settings(self.index, meta["settings"])

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, table: ConceptTable, encoder: Encoder, index_type: str = "Flat", *,
              extra: ConceptTable | None = None, nprobe: int | None = None, ef_search: int | None = None,
              refine_k_factor: int | None = None, batch_size: int = 256, use_gpu: bool | str = "auto",
              show_progress: bool = False, store_vectors: bool = False) -> "ConceptIndex":
        """Embed every name of `table` (plus `extra`, e.g. corpus mentions as aliases) with
        `encoder` and index them. Duplicate (concept, name) rows are embedded once."""
        table = _clean(table if extra is None else _concat(table, align_alias_ids(table, extra)))
        t0 = time.perf_counter()
        vectors = _embed(encoder, table.names, batch_size, show_progress)
        embed_s = time.perf_counter() - t0
        index = cls.from_vectors(table, vectors, index_type, encoder=encoder, nprobe=nprobe,
                                 ef_search=ef_search, refine_k_factor=refine_k_factor, use_gpu=use_gpu,
                                 store_vectors=store_vectors)
        total_s = time.perf_counter() - t0
        index.meta["build"] |= {"batch_size": batch_size, "embed_seconds": round(embed_s, 2),
                                "seconds": round(total_s, 2),
                                "names_per_second": round(len(table) / max(total_s, 1e-9), 1)}
        return index

    @classmethod
    def from_vectors(cls, table: ConceptTable, vectors: np.ndarray, index_type: str = "Flat", *,
                     encoder: Encoder | None = None, nprobe: int | None = None, ef_search: int | None = None,
                     refine_k_factor: int | None = None, use_gpu: bool | str = "auto",
                     seed: int = 0, store_vectors: bool = False) -> "ConceptIndex":
        """Index precomputed vectors (row i belongs to `table` row i). They are L2-normalised
        here, so inner product is cosine whatever the caller passed. `store_vectors` keeps them
        too (float16, written to disk by `save`) to rescore a compressed index's candidates."""
        if len(table) == 0:
            raise InputError("cannot build a concept index from an empty concept table (0 names): "
                             "check that the KB file has rows and that --format matches it")
        vectors = np.array(vectors, dtype="float32", order="C")  # a copy: normalised in place below
        if vectors.ndim != 2 or vectors.shape[0] != len(table):
            raise InputError(f"expected one vector per table row ({len(table)}, dim), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise InputError("the name vectors contain NaN or infinite values; check the encoder")
        faiss.normalize_L2(vectors)
        _check_ids(table.ids)
        # one space for any whitespace run: the columns separate values by line breaks, TSV KBs by tabs
        table = ConceptTable(list(table.ids), [" ".join(n.split()) for n in table.names], list(table.sources))
        dim = vectors.shape[1]
        if encoder is not None and encoder.dim != dim:
            raise InputError(f"vectors have dim {dim} but the encoder {encoder.dim}")
        t0 = time.perf_counter()
        try:
            index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise InputError(f"index_type={index_type!r} is not a valid FAISS index_factory string for "
                             f"dim {dim} ({faiss_msg(err)}); try 'Flat', 'HNSW32' or 'IVF256,PQ32,RFlat' "
                             "(PQ's M must divide the dim)") from None
        if not index.is_trained:
            for sub in sub_indexes(index):  # polysemous codes serve Hamming pre-filtering,
                if hasattr(sub, "do_polysemous_training"):  # which we never use; it costs minutes
                    sub.do_polysemous_training = False
            rng = np.random.default_rng(seed)
            sample = vectors if len(vectors) <= MAX_TRAIN else vectors[
                np.sort(rng.choice(len(vectors), MAX_TRAIN, replace=False))]
            try:
                index.train(sample)
            except RuntimeError as err:
                raise InputError(f"index_type={index_type!r} cannot be trained on {len(sample)} names "
                                 f"({faiss_msg(err)}); use fewer IVF lists / PQ centroids "
                                 "(IVF nlist ≈ sqrt(names)) or 'Flat' for a small KB") from None
        index.add(vectors)
        train_add_s = time.perf_counter() - t0
        settings = default_settings(index, nprobe, ef_search, refine_k_factor)
        sources = Counter(table.sources)
        meta = {
            "format": FORMAT_VERSION,
            "metric": "inner_product",
            "normalized": True,
            "dim": dim,
            "index_type": index_type,
            "n_names": len(table),
            "n_concepts": table.n_concepts,
            "sources": dict(sources),
            "alias_files": sorted(s for s in sources if s != KB_SOURCE),
            "encoder": encoder_meta(encoder),
            "settings": settings,
            "build": {"faiss": faiss.__version__, "train_add_seconds": round(train_add_s, 2)},
        }
        store = VectorStore.from_vectors(vectors) if store_vectors else None
        if store is not None:
            meta["vectors"] = store.meta()
        return cls(table, index, meta, use_gpu=use_gpu, vectors=store)

    def add_aliases(self, extra: ConceptTable, encoder: Encoder, *, batch_size: int = 256,
                    show_progress: bool = False) -> int:
        """Add names (e.g. train-corpus mentions, with their file as `source`) to a built index
        without rebuilding it; returns how many new rows were added."""
        self.check_encoder(encoder, what="the encoder given to add_aliases")
        seen = set(zip(self.table.ids, self.table.names))
        extra = align_alias_ids(self.table, extra)
        new = _clean(ConceptTable.from_rows(r for r in extra.rows() if (r[0], r[1]) not in seen),
                     allow_empty=True)
        if not len(new):
            return 0
        vectors = _embed(encoder, new.names, batch_size, show_progress)
        faiss.normalize_L2(vectors)
        if self.meta.get("mmapped"):  # a read-only memory map cannot grow: take a private copy
            self.cpu_index = faiss.deserialize_index(faiss.serialize_index(self.cpu_index))
            self.meta["mmapped"] = False
            self.index, self.on_gpu = maybe_gpu(self.cpu_index, self.on_gpu)
            apply_search_settings(self.index, self.meta["settings"])
        self.index.add(vectors)
        if self.vectors is not None:
            self.vectors.extend(vectors)
        if self.on_gpu:
            self.cpu_index = None  # the GPU copy is now the only complete one
        for row in new.rows():
            self.table.add(*row)
        self._name_rows = None
        sources = Counter(self.table.sources)
        self.meta |= {"n_names": len(self.table), "n_concepts": self.table.n_concepts,
                      "sources": dict(sources), "alias_files": sorted(s for s in sources if s != KB_SOURCE)}
        return len(new)

    def set_prior(self, counts: dict[str, int], files: Sequence[str] = (), weight: float | None = None) -> None:
        """Rank concepts by cosine + `weight` · log(1 + counts[concept]) (see `spacy_el.kb.ranking`).
        Ids are spelt as the table spells them (`MESH:C567755` joins `MESH:C567755|OMIM:613097`);
        the counts of concepts absent from the table are kept out and reported in `meta["prior"]`."""
        self.prior, self.meta["prior"] = align_prior(self.table, counts, files)
        if weight is not None:
            self.set_prior_weight(weight)

    def set_prior_weight(self, weight: float) -> None:
        """How much the corpus prior counts (0 turns it off)."""
        self.meta.setdefault("prior", {})["weight"] = check_prior_weight(weight)

    @property
    def prior_weight(self) -> float:
        return float(self.meta.get("prior", {}).get("weight", 0.0)) if self.prior else 0.0

    def concept_bonus(self) -> dict[str, float]:
        """The prior's bonus per concept id, as `search` adds it (for a reranker's order)."""
        return concept_bonus(self.prior, self.prior_weight)

    # ------------------------------------------------------------------ searching
    @property
    def dim(self) -> int:
        return self.meta["dim"]

    @property
    def stores_vectors(self) -> bool:
        """Does the index keep its vectors uncompressed (`Flat`, `HNSW…` over flat storage)?"""
        return self._flat() is not None

    def _flat(self) -> faiss.IndexFlat | None:
        index = faiss.downcast_index(self.cpu_index) if self.cpu_index is not None else None
        if isinstance(index, faiss.IndexHNSW):
            index = faiss.downcast_index(index.storage)
        return index if isinstance(index, faiss.IndexFlat) else None

    def stored_vectors(self, rows: Sequence[int]) -> np.ndarray | None:
        """The exact vectors of table rows when the index stores them (`stores_vectors`), else
        None: PQ/SQ/PCA/IVF codes only approximate them."""
        index = self._flat()
        if index is None:
            return None
        if not len(rows):
            return np.zeros((0, self.dim), "float32")
        return index.reconstruct_batch(np.asarray(rows, dtype="int64"))

    def name_rows(self, key: Callable[[str], str]) -> dict[str, int]:
        """`key(name)` → the first table row with that name (built once per key function)."""
        if self._name_rows is None or self._name_rows[0] is not key:
            rows: dict[str, int] = {}
            for row, name in enumerate(self.table.names):
                rows.setdefault(key(name), row)
            self._name_rows = (key, rows)
        return self._name_rows[1]

    def __len__(self) -> int:
        return len(self.table)

    def _row_codes(self) -> RowCodes:
        """The table as `RowCodes`, built once per table (aliases added later extend it, which
        rebuilds them)."""
        table = self.table
        if self._codes is None or self._codes[0] is not table or len(self._codes[1].text) != len(table):
            self._codes = (table, row_codes(table))
        return self._codes[1]

    def allowed_rows(self, types: Sequence[str], setting: str = "types") -> np.ndarray:
        """A bool per table row: does its concept carry one of `types`? (for `search(allowed=…)`)."""
        if self.types is None:
            raise InputError(f"{setting}: {self.meta.get('path', 'this concept index')} has no semantic types; "
                             "attach them with `spacy-el index-types INDEX --mrsty/--obo/--tsv FILE`")
        return self.types.allowed_rows(self.table.ids, types, setting)

    def search(self, vectors: np.ndarray, k: int = 5, *, allowed: np.ndarray | None = None
               ) -> list[list[Candidate]]:
        """Top-k concepts per query vector, best first, each with its best name's cosine.
        Queries whose first pass finds fewer than k distinct concepts are searched deeper.
        `allowed` (a bool per table row, e.g. `allowed_rows(["DISO"])`) restricts the search
        inside FAISS (`spacy_el.kb.types.RowFilter`): k allowed concepts whenever that many exist."""
        queries = np.array(vectors, dtype="float32", order="C", ndmin=2)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (n, {self.dim}), got {queries.shape}")
        faiss.normalize_L2(queries)  # cosine whatever the caller passed
        results: list[list[Candidate]] = [[] for _ in range(len(queries))]
        if k <= 0 or not len(queries):
            return results
        codes = self._row_codes()
        key = (id(codes), hash(frozenset(self.prior.items())), self.prior_weight)
        if self._bonus is None or self._bonus[0] != key:  # one array per concept: built once, not per search
            self._bonus = (key, prior_bonus(self.prior, self.prior_weight, codes))
        bonus = self._bonus[1]
        todo = np.arange(len(queries))
        row_filter = RowFilter(self.index, allowed) if allowed is not None else None
        n_rows = len(self.table) if row_filter is None else row_filter.n_allowed
        if not n_rows:
            return results
        depth = min(n_rows, max(k * DEPTH_FACTOR, 32))
        while len(todo):
            scores, rows, complete = self._names(queries[todo], depth, row_filter, n_rows, k)
            found = collapse(scores, rows, k, codes, bonus, self.table)
            again = []
            for qi, cands, done in zip(todo, found, complete):
                results[qi] = cands
                if len(cands) < k and not done and depth < n_rows:
                    again.append(qi)
            todo = np.array(again, dtype=int)
            depth = min(n_rows, depth * 4)
        return results

    def _names(self, queries: np.ndarray, depth: int, row_filter: RowFilter | None, n_rows: int, wanted: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores and rows of the best `depth` names, and per query whether every name within
        reach was seen. With stored vectors FAISS fetches at least `rescore_factor` names per
        result `wanted`, and the exact cosines of those choose the best `depth`."""
        wide = depth if self.vectors is None else min(n_rows, max(depth, wanted * self.vectors.rescore_factor))
        if row_filter is None:
            scores, rows = self.index.search(queries, wide)
            complete = rows[:, -1] < 0  # the index returned fewer names than asked for
        else:
            scores, rows, complete = row_filter.search(queries, wide, last=wide >= n_rows)
        if self.vectors is not None:
            scores, rows = self.vectors.rescore(queries, rows, depth)
        return scores, rows, complete

    def check_encoder(self, encoder: Encoder, what: str = "the encoder") -> None:
        """Vectors from another encoder live in another space: refuse them with the fix."""
        built = self.meta["encoder"]
        fp, dim = getattr(encoder, "fingerprint", None), getattr(encoder, "dim", None)
        where = self.meta.get("path", "this concept index")
        if dim != self.dim or (built.get("fingerprint") and fp != built["fingerprint"]):
            raise InputError(
                f"{where} was built with encoder {built.get('name') or '?'} (fingerprint "
                f"{built.get('fingerprint')}, dim {self.dim}), but {what} is "
                f"{getattr(encoder, 'settings', None) and encoder.settings.base or '?'} (fingerprint {fp}, "
                f"dim {dim}); rebuild the index with this encoder (`spacy-el build-index KB ENCODER_DIR "
                "OUTPUT_DIR`) or use the encoder the index was built with")

    # ------------------------------------------------------------------ disk
    def save(self, path: str | Path) -> None:
        """Write the index's files (`spacy_el.kb.files`) into `path` atomically (all or nothing)."""
        cpu = self.cpu_index if self.cpu_index is not None else faiss.index_gpu_to_cpu(self.index)
        with atomic_dir(path) as tmp:
            write_parts(tmp, IndexParts(self.meta, cpu, self.table, self._row_codes(), self.prior, self.vectors,
                                        self.types))

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None, *, use_gpu: bool | str = "auto", mmap: bool = True,
             nprobe: int | None = None, ef_search: int | None = None,
             refine_k_factor: int | None = None, prior_weight: float | None = None,
             rescore_factor: int | None = None, prefetch: bool = False) -> "ConceptIndex":
        """Read an index directory; with `encoder`, check it is the one the index was built with.
        Search settings (the prior's weight, the stored vectors' rescore factor) given here
        override the saved ones. `prefetch` (with `mmap`): read the directory's files into the page
        cache in a background thread (`spacy_el.io.prefetch_files`; `index.prefetching` is the
        thread), so that from a cold start the first searches do not wait on random disk reads of
        the inverted lists, the table's columns and the stored vectors."""
        path = Path(path)
        parts = read_parts(path, mmap, {"nprobe": nprobe, "ef_search": ef_search, "refine_k_factor": refine_k_factor},
                           rescore_factor)
        self = cls(parts.table, parts.index, parts.meta, use_gpu=use_gpu, prior=parts.prior, vectors=parts.vectors)
        self._codes = (parts.table, parts.codes)
        self.types = parts.types
        if prior_weight is not None:
            self.set_prior_weight(prior_weight)
        if encoder is not None:
            self.check_encoder(encoder)
        if prefetch and mmap:
            self.prefetching = prefetch_files(list(path.rglob("*")))
        return self


# ---------------------------------------------------------------------- helpers
def _check_ids(ids: Sequence[str]) -> None:
    """What is written must read back: the columns (and a TSV KB) cannot hold an id with a tab or a line break.
    The KB readers reject such rows with their file and line; this catches tables built in code."""
    for row, cid in enumerate(ids):
        if any(c in cid for c in "\t\n\r"):
            raise InputError(f"concept id {cid!r} (table row {row + 1}) holds a tab or a line break, which "
                             "the index's table cannot store; fix the id in the KB")


def _concat(table: ConceptTable, extra: ConceptTable) -> ConceptTable:
    return ConceptTable.from_rows([*table.rows(), *extra.rows()])


def _clean(table: ConceptTable, allow_empty: bool = False) -> ConceptTable:
    """One row per (concept, name), first source wins (the KB before corpus aliases); tabs and
    newlines inside names become spaces so the table survives its TSV round trip."""
    out, seen = ConceptTable(), set()
    for cid, name, source in table.rows():
        name = " ".join(name.split())
        if name and (cid, name) not in seen:
            seen.add((cid, name))
            out.add(cid, name, source)
    if not out and not allow_empty:
        raise InputError("cannot build a concept index from an empty concept table (0 names): "
                         "check that the KB file has rows and that --format matches it")
    return out


def _embed(encoder: Encoder, texts: Sequence[str], batch_size: int, show_progress: bool) -> np.ndarray:
    return np.asarray(encoder.embed(list(texts), batch_size=batch_size, show_progress=show_progress),
                      dtype="float32")
