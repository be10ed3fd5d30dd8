"""The name vectors kept beside a compressed index, on disk, for exact rescoring.

A 10M-name IVF-PQ index holds ~100 bytes per name in memory, and its PQ codes blur the order of
near neighbours: the name the exact search ranks first falls out of the top 5 for ~6% of queries.
Keeping every vector in memory (`Flat`, `RFlat`) costs 1.5 KB per name. The way out that disk-based
ANN systems (DiskANN, SPANN) take: keep the compressed codes in memory and the full vectors on disk,
fetch from the compressed index a few times more candidates than asked for, and rescore those
exactly from the vectors on disk. Only the rows rescored are read, through a memory map, so the
page cache (shared between processes) keeps the hot ones; float16 halves the file at a cosine
error of ~1e-4 (names closer than that to each other may swap places, as they do between two
batches of an int8 encoder).

On disk: `vectors.f16`, raw little-endian float16 rows in index-row order; its shape is in the
index's `meta.json` (`vectors`), checked against the file's size on load.

A memory map reads a page when a search first touches it: from a cold page cache every rescored
row is a random disk read (`ConceptIndex.load(prefetch=True)` reads the index's files in the
background first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spacy_el.io import InputError

VECTORS_FILE = "vectors.f16"
DTYPE = np.dtype("<f2")
#: The first pass fetches at least this many names per result wanted; rescoring keeps the best.
DEFAULT_RESCORE_FACTOR = 4


class VectorStore:
    """(n, dim) float16 name vectors, memory-mapped or in memory, with exact rescoring."""

    def __init__(self, array: np.ndarray, rescore_factor: int = DEFAULT_RESCORE_FACTOR) -> None:
        if array.ndim != 2 or array.dtype != DTYPE:
            raise ValueError(f"expected an (n, dim) float16 array, got {array.dtype} {array.shape}")
        if rescore_factor < 1:
            raise InputError(f"rescore_factor={rescore_factor}: must be at least 1 (1 rescores only the names asked for)")
        self.array = array
        self.rescore_factor = rescore_factor

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, rescore_factor: int = DEFAULT_RESCORE_FACTOR) -> "VectorStore":
        return cls(np.asarray(vectors, dtype=DTYPE), rescore_factor)

    @classmethod
    def open(cls, folder: Path, meta: dict[str, Any], mmap: bool = True) -> "VectorStore":
        """The store an index directory's `meta["vectors"]` describes; an error naming the file
        when it is missing or its size does not match the meta (a cut copy or a mixed build)."""
        path = folder / VECTORS_FILE
        n, dim = int(meta["n"]), int(meta["dim"])
        expected = n * dim * DTYPE.itemsize
        if not path.exists() or path.stat().st_size != expected:
            found = f"{path.stat().st_size} bytes" if path.exists() else "no file"
            raise InputError(f"{path}: expected {expected} bytes ({n} vectors of dim {dim}, float16), found {found}; "
                             "the index directory is incomplete: rebuild it (or copy it again whole)")
        array = np.memmap(path, dtype=DTYPE, mode="r", shape=(n, dim)) if mmap else \
            np.fromfile(path, dtype=DTYPE).reshape(n, dim)
        return cls(array, int(meta.get("rescore_factor", DEFAULT_RESCORE_FACTOR)))

    def meta(self) -> dict[str, Any]:
        return vectors_meta(len(self.array), self.array.shape[1], self.rescore_factor)

    def __len__(self) -> int:
        return len(self.array)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of `rows` (read from disk when memory-mapped)."""
        return np.asarray(self.array[np.asarray(rows, dtype="int64")], dtype="float32")

    def rescore(self, queries: np.ndarray, rows: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of each query with its candidate `rows` (FAISS's -1 padding scores
        -inf), the best `keep` per query, best first. Rows are read in sorted order, so the memory
        map reads each page once per call."""
        rows = np.asarray(rows, dtype="int64")
        valid = rows >= 0
        flat = np.where(valid, rows, 0).ravel()
        unique, inverse = np.unique(flat, return_inverse=True)
        vectors = self.rows(unique)[inverse].reshape(*rows.shape, -1)
        scores = np.einsum("qrd,qd->qr", vectors, np.asarray(queries, dtype="float32"))
        scores[~valid] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        return np.take_along_axis(scores, order, 1).astype("float32"), np.take_along_axis(rows, order, 1)

    def extend(self, vectors: np.ndarray) -> None:
        """Append rows in memory (a memory map cannot grow); `save` writes them."""
        self.array = np.concatenate([np.asarray(self.array), np.asarray(vectors, dtype=DTYPE)])

    def save(self, folder: Path, chunk_rows: int = 65_536) -> None:
        """Write `vectors.f16` into `folder` (the caller's temporary index directory), a chunk at a time."""
        with VectorWriter(folder) as writer:
            for start in range(0, len(self.array), chunk_rows):
                writer.add(self.array[start:start + chunk_rows])


def vectors_meta(n: int, dim: int, rescore_factor: int = DEFAULT_RESCORE_FACTOR) -> dict[str, Any]:
    """What an index's `meta.json` says of its stored vectors (`VectorStore.open` reads it)."""
    return {"file": VECTORS_FILE, "dtype": "float16", "n": n, "dim": dim, "rescore_factor": rescore_factor}


class VectorWriter:
    """Append float vectors to `folder/vectors.f16` chunk by chunk (the streaming build)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / VECTORS_FILE
        self.n = 0
        self.dim: int | None = None

    def __enter__(self) -> "VectorWriter":
        self._file = open(self.path, "wb")
        return self

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=DTYPE)
        if self.dim is None:
            self.dim = vectors.shape[1]
        elif vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of dim {vectors.shape[1]} after dim {self.dim}")
        self._file.write(vectors.tobytes())
        self.n += len(vectors)

    def __exit__(self, *exc) -> None:
        self._file.close()
