"""Changing a built concept index without rebuilding it: add concepts or names (embedding only
the new names) and remove concepts, with the table, prior, types and meta kept consistent and
the directory replaced atomically (a killed update leaves the old index whole).

Removal needs FAISS to drop rows *and renumber the rest*, since index row i is table row i.
The flat-code types do (`Flat`, `SQ…`, `PQ…`, also under a `PCA…` pre-transform):
`remove_ids` compacts them. `IVF…` types remove but keep the old row numbers, `HNSW…` and
refine (`…,RFlat`) types cannot remove at all: for those, `rebuild=True` re-embeds the remaining
names into a fresh index of the same type (with the encoder), or build it anew from the KB.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from spacy_el.kb.faiss_utils import faiss
from spacy_el.ids import id_owners, kb_spelling
from spacy_el.io import InputError, locked, read_lines
from spacy_el.kb.index import KB_SOURCE, ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.vectors import VectorStore
from spacy_el.models import Encoder


def can_remove(index: faiss.Index) -> bool:
    """Does `remove_ids` drop rows of this index type and renumber the rest in order?"""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return can_remove(index.index)
    return isinstance(index, faiss.IndexFlatCodes)


def read_ids(spec: str | Path) -> list[str]:
    """Concept ids to remove: a file with one id per line, or ids separated by commas."""
    path = Path(str(spec))
    if path.is_file():
        return [line.strip() for _, line in read_lines(path) if line.strip()]
    return [i.strip() for i in str(spec).split(",") if i.strip()]


def update_index(path: str | Path, *, add: ConceptTable | None = None, remove: Iterable[str] = (),
                 encoder: Encoder | None = None, rebuild: bool = False, batch_size: int = 256) -> dict[str, Any]:
    """Remove the concepts `remove` (ids as the table or a corpus spells them) and add the rows of
    `add` (new concepts or new names of known ones) to the index directory `path`; returns what
    changed. Nothing is written unless every step succeeds; concurrent updates of one index run
    one after the other (`spacy_el.io.locked`), so none is lost."""
    path = Path(path)
    with locked(path):
        return _update(path, add, remove, encoder, rebuild, batch_size)


def _update(path: Path, add: ConceptTable | None, remove: Iterable[str], encoder: Encoder | None, rebuild: bool,
            batch_size: int) -> dict[str, Any]:
    index = ConceptIndex.load(path, encoder, mmap=False, use_gpu=False)
    if add is not None and len(add) and encoder is None:
        raise InputError("adding names needs the encoder the index was built with: give --encoder ENCODER_DIR")
    summary: dict[str, Any] = {"removed_concepts": 0, "removed_names": 0, "added_names": 0}
    t0 = time.perf_counter()
    remove = list(dict.fromkeys(remove))
    if remove:
        index = _remove(index, remove, encoder, rebuild, batch_size, summary)
    if add is not None and len(add):
        assert encoder is not None
        summary["added_names"] = index.add_aliases(add, encoder, batch_size=batch_size)
    sources = Counter(index.table.sources)
    index.meta |= {"n_names": len(index.table), "n_concepts": index.table.n_concepts, "sources": dict(sources),
                   "alias_files": sorted(s for s in sources if s != KB_SOURCE)}
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    index.meta.setdefault("updates", []).append({k: v for k, v in summary.items()} | {"time": time.time()})
    index.save(path)
    return summary | {"n_names": len(index.table), "n_concepts": index.table.n_concepts}


def _remove(index: ConceptIndex, remove: list[str], encoder: Encoder | None, rebuild: bool, batch_size: int,
            summary: dict[str, Any]) -> ConceptIndex:
    table = index.table
    owners, known = id_owners(table.ids), set(table.ids)
    spelt = {cid: kb_spelling(owners, cid) for cid in remove}
    missing = [cid for cid, s in spelt.items() if s not in known]
    if missing:
        shown = ", ".join(missing[:10]) + (f" … ({len(missing)} in all)" if len(missing) > 10 else "")
        raise InputError(f"--remove: {shown} not in the index {index.meta.get('path', '')} (`ConceptIndex.load(DIR).table.ids` lists its ids); "
                         "fix the ids or drop them")
    gone = set(spelt.values())
    drop = np.fromiter((cid in gone for cid in table.ids), dtype=bool, count=len(table))
    kept = ConceptTable.from_rows(r for r, d in zip(table.rows(), drop) if not d)
    if not len(kept):
        raise InputError("--remove would remove every concept of the index; build a new index instead")
    index_type = index.meta.get("index_type", "?")
    if can_remove(index.cpu_index):
        n = index.cpu_index.remove_ids(np.flatnonzero(drop).astype("int64"))
        if n != int(drop.sum()):
            raise InputError(f"FAISS removed {n} of {int(drop.sum())} rows; the index is unchanged on disk: rebuild it")
        vectors = index.vectors and VectorStore(np.asarray(index.vectors.array)[~drop], index.vectors.rescore_factor)
        new = ConceptIndex(kept, index.cpu_index, index.meta, use_gpu=False, prior=index.prior, vectors=vectors)
    elif rebuild:
        if encoder is None:
            raise InputError("--rebuild re-embeds the remaining names: give --encoder ENCODER_DIR")
        new = ConceptIndex.build(kept, encoder, index_type, batch_size=batch_size, use_gpu=False,
                                 store_vectors=index.vectors is not None,
                                 **{k: index.meta["settings"].get(k) for k in ("nprobe", "ef_search", "refine_k_factor")})
        new.meta = index.meta | {"build": new.meta["build"] | {"rebuilt_by_update": True}}
        if new.vectors is not None:
            new.vectors.rescore_factor = index.vectors.rescore_factor
        new.prior = dict(index.prior)
    else:
        raise InputError(
            f"index type {index_type!r} cannot remove vectors in place (FAISS {type(faiss.downcast_index(index.cpu_index)).__name__}: "
            "no remove_ids that keeps rows in table order); add --rebuild --encoder ENCODER_DIR to re-embed the "
            f"{len(kept)} remaining names into a new {index_type!r} index, or rebuild from the KB without those "
            "concepts (`spacy-el build-index KB ENCODER_DIR OUTPUT_DIR`); Flat, SQ and PQ indexes remove in place")
    new.types = index.types.restricted(kept.ids) if index.types is not None else None
    new.prior = {cid: n for cid, n in new.prior.items() if cid not in gone}
    if "prior" in new.meta:
        new.meta["prior"] = new.meta["prior"] | {"n_concepts": len(new.prior), "n_mentions": sum(new.prior.values())}
    summary["removed_concepts"] = len(gone)
    summary["removed_names"] = int(drop.sum())
    return new
