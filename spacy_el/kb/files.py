"""The files of a concept index directory (`spacy_el.kb.index`): their names, `meta.json`, and
reading and writing the parts `ConceptIndex.load` and `save` assemble, so that the streaming build
(`spacy_el.kb.streaming`) writes the same format without holding an index."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from spacy_el.io import InputError, atomic_write
from spacy_el.kb.faiss_utils import faiss, read_index
from spacy_el.kb.ranking import RowCodes, read_prior, write_prior
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.types import TYPES_FILE, ConceptTypes
from spacy_el.kb.vectors import VectorStore
from spacy_el.models import Encoder

INDEX_FILE = "index.faiss"
#: The table as memory-mapped columns and its row codes (`ConceptTable.to_columns`, `RowCodes.save`).
COLUMNS_DIR = "columns"
META_FILE = "meta.json"
PRIOR_FILE = "prior.tsv"
FORMAT_VERSION = 1
#: Keys every `meta.json` holds (a file without them was cut short or written by hand).
_META_KEYS = ("format", "dim", "settings", "encoder")


class IndexParts(NamedTuple):
    """What an index directory holds, as read by `read_parts`."""

    meta: dict[str, Any]
    index: Any
    table: ConceptTable
    codes: RowCodes
    prior: dict[str, int] | None
    vectors: VectorStore | None
    types: ConceptTypes | None


def read_meta(path: Path) -> dict[str, Any]:
    """`meta.json`, or an error naming it when it is truncated, not JSON or lacks a key."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({getattr(err, 'msg', err)}); the file is truncated or "
                         "damaged: rebuild the index (`spacy-el build-index KB ENCODER_DIR OUTPUT_DIR`)") from None
    missing = [k for k in _META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)}; the file is incomplete: rebuild the index")
    return meta


def read_parts(path: Path, mmap: bool, settings: dict[str, Any], rescore_factor: int | None) -> IndexParts:
    """Every part of the index directory `path`, checked against each other; `settings` override
    the saved search settings, `rescore_factor` the stored vectors' one."""
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise InputError(f"{path}: not a concept index directory (no {META_FILE}); "
                         "build one with `spacy-el build-index KB ENCODER_DIR OUTPUT_DIR`")
    meta = read_meta(meta_path)
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(f"{meta_path}: index format {meta.get('format')!r}, this spacy-el reads "
                         f"format {FORMAT_VERSION}; rebuild the index")
    meta["path"] = str(path)
    index, meta["mmapped"] = read_index(path / INDEX_FILE, mmap)
    if index.d != meta["dim"]:
        raise InputError(f"{path}: {INDEX_FILE} holds vectors of dim {index.d} but {META_FILE} says dim "
                         f"{meta['dim']}: the directory mixes files of two builds; rebuild the index")
    columns = path / COLUMNS_DIR
    if not columns.is_dir():
        raise InputError(f"{path}: no {COLUMNS_DIR}/ (the concept table): the directory was written by a "
                         "spacy-el before 0.1.0 or is incomplete; rebuild the index with `spacy-el build-index`")
    table = ConceptTable.from_columns(columns, mmap)
    codes = RowCodes.open(columns, table.ids, mmap)
    meta["settings"] |= {k: v for k, v in settings.items() if v is not None}
    if index.ntotal != len(table):
        raise InputError(f"{path}: {INDEX_FILE} holds {index.ntotal} vectors but the table ({COLUMNS_DIR}/) "
                         f"{len(table)} rows: the directory mixes files of two builds; rebuild the index")
    prior = read_prior(path / PRIOR_FILE) if (path / PRIOR_FILE).exists() else None
    if rescore_factor is not None:
        if "vectors" not in meta:
            raise InputError(f"rescore_factor={rescore_factor}: {path} stores no vectors to rescore with; drop "
                             "the setting or rebuild the index with stored vectors (`--store-vectors`)")
        meta["vectors"]["rescore_factor"] = rescore_factor
    vectors = VectorStore.open(path, meta["vectors"], mmap) if "vectors" in meta else None
    types = ConceptTypes.from_tsv(path / TYPES_FILE) if (path / TYPES_FILE).exists() else None
    return IndexParts(meta, index, table, codes, prior, vectors, types)


def write_parts(directory: Path, parts: IndexParts) -> None:
    """Write the parts into `directory` (the temporary directory of an atomic save)."""
    meta = {k: v for k, v in parts.meta.items() if k not in ("path", "mmapped", "vectors")}
    faiss.write_index(parts.index, str(directory / INDEX_FILE))
    parts.table.to_columns(directory / COLUMNS_DIR)
    parts.codes.save(directory / COLUMNS_DIR)
    if parts.types is not None:
        parts.types.to_tsv(directory / TYPES_FILE)
    if parts.vectors is not None:
        parts.vectors.save(directory)
        meta["vectors"] = parts.vectors.meta()
    if parts.prior:
        write_prior(directory / PRIOR_FILE, parts.prior)
    with atomic_write(directory / META_FILE) as f:
        json.dump(meta, f, indent=2)


def encoder_meta(encoder: Encoder | None) -> dict[str, Any]:
    """What meta.json records of the encoder an index was built with (fingerprint, dim, name)."""
    if encoder is None:
        return {"fingerprint": None, "dim": None, "name": None}
    settings = getattr(encoder, "settings", None)
    return {"fingerprint": encoder.fingerprint, "dim": encoder.dim,
            "name": getattr(settings, "base", None) or None}
