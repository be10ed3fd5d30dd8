"""Streaming construction of a concept index too large to hold as float vectors: train the FAISS
index on a sample, then add the names chunk by chunk, appending each chunk's rows to the table as
it goes. Only one chunk of vectors is in memory at a time, so a 10M-name IVF-PQ index needs the
compressed codes plus one chunk, not 10M × dim floats.

The result is an ordinary index directory (`index.faiss`, the table as memory-mapped
`columns/` with its row codes, `meta.json`) that `ConceptIndex.load` reads; it is written atomically. With `use_gpu` and faiss-gpu, training and
adding run on every visible GPU (the index sharded across them), and the index comes back to the
CPU to be written; without a GPU the same code runs on the CPU. With `store_vectors` every chunk's
vectors are also appended to `vectors.f16` (float16, on disk), which the loaded index uses to
rescore its compressed candidates exactly (`spacy_el.kb.vectors`).
"""
from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from spacy_el.kb.faiss_utils import faiss
from spacy_el.io import InputError, atomic_dir
from spacy_el.kb.faiss_utils import default_settings, faiss_msg, sub_indexes, to_all_gpus
from spacy_el.kb.files import COLUMNS_DIR, FORMAT_VERSION, INDEX_FILE, META_FILE
from spacy_el.kb.ranking import KB_SOURCE, RowCodesBuilder
from spacy_el.kb.table import ColumnsWriter
from spacy_el.kb.vectors import VectorWriter, vectors_meta

#: One chunk: the (concept id, name, source) rows and their vectors (row i ↔ vector i).
Chunk = tuple[Sequence[tuple[str, str, str]], np.ndarray]


def _clean_name(name: str) -> str:
    return " ".join(name.split())


def build_index_from_chunks(output: str | Path, train_vectors: np.ndarray, chunks: Iterable[Chunk], *,
                            index_type: str, encoder_meta: dict[str, Any], nprobe: int | None = None,
                            ef_search: int | None = None, refine_k_factor: int | None = None,
                            use_gpu: bool | str = False, store_vectors: bool = False) -> dict[str, Any]:
    """Train `index_type` on `train_vectors`, add every chunk, write the index directory
    `output`; returns its meta. Rows are written as given (the caller removes duplicates)."""
    train = np.array(train_vectors, dtype="float32", order="C")
    if train.ndim != 2 or not len(train):
        raise InputError(f"expected a non-empty (n, dim) training sample, got shape {train.shape}")
    faiss.normalize_L2(train)
    dim = train.shape[1]
    try:
        index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise InputError(f"index_type={index_type!r} is not a valid FAISS index_factory string for dim {dim} "
                         f"({faiss_msg(err)}); try 'IVF4096,PQ64' (PQ's M must divide the dim)") from None
    for sub in sub_indexes(index):
        if hasattr(sub, "do_polysemous_training"):
            sub.do_polysemous_training = False
    t0 = time.perf_counter()
    try:  # on the CPU: one sample, and every shard must share the trained quantizers
        index.train(train)
    except RuntimeError as err:
        raise InputError(f"index_type={index_type!r} cannot be trained on {len(train)} names ({faiss_msg(err)}); "
                         "use fewer IVF lists / PQ centroids or a larger sample") from None
    train_s = time.perf_counter() - t0
    work, on_gpu = to_all_gpus(index, use_gpu, shard=True)  # adding: sharded over every GPU, else the CPU
    n_names, sources, concepts = 0, Counter(), set()
    codes = RowCodesBuilder()
    with atomic_dir(output) as tmp:
        with ColumnsWriter(tmp / COLUMNS_DIR) as columns, \
                (VectorWriter(tmp) if store_vectors else contextlib.nullcontext()) as stored:
            for rows, vectors in chunks:
                vectors = np.array(vectors, dtype="float32", order="C")
                if vectors.shape != (len(rows), dim):
                    raise InputError(f"a chunk of {len(rows)} rows came with vectors of shape {vectors.shape}; "
                                     f"expected ({len(rows)}, {dim})")
                if not np.isfinite(vectors).all():
                    raise InputError("the name vectors contain NaN or infinite values; check the encoder")
                faiss.normalize_L2(vectors)
                clean = []
                for cid, name, source in rows:
                    if any(c in cid for c in "\t\n\r") or not cid.strip():
                        raise InputError(f"concept id {cid!r} is empty or holds a tab or line break; fix the KB")
                    clean.append((cid, _clean_name(name), source))
                    sources[source] += 1
                    concepts.add(hash(cid))
                work.add(vectors)
                if stored is not None:
                    stored.add(vectors)
                columns.add(clean)
                codes.add(clean)
                n_names += len(rows)
        if not n_names:
            raise InputError("no names to index: the chunks were empty")
        codes.build().save(tmp / COLUMNS_DIR)
        cpu = faiss.index_gpu_to_cpu(work) if on_gpu else work
        faiss.write_index(cpu, str(tmp / INDEX_FILE))
        meta = {
            "format": FORMAT_VERSION, "metric": "inner_product", "normalized": True, "dim": dim,
            "index_type": index_type, "n_names": n_names, "n_concepts": len(concepts), "sources": dict(sources),
            "alias_files": sorted(s for s in sources if s != KB_SOURCE), "encoder": encoder_meta,
            "settings": default_settings(cpu, nprobe, ef_search, refine_k_factor),
            "build": {"faiss": faiss.__version__, "streaming": True, "train_size": len(train),
                      "train_seconds": round(train_s, 2), "train_add_seconds": round(time.perf_counter() - t0, 2),
                      "gpu": on_gpu},
        }
        if stored is not None:
            meta["vectors"] = vectors_meta(stored.n, dim)
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
    return meta
