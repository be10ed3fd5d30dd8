"""How `sap_linker` carries its heavy parts: the encoder, the concept index and the optional
reranker each saved as a directory (`encoder/`, `index/`, `reranker/`), on disk or as bytes (the
directory's files in a msgpack map), so a saved or packaged pipeline is self-contained."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from spacy.util import ensure_path
from spacy.util import from_bytes as util_from_bytes
from spacy.util import from_disk as util_from_disk
from spacy.util import to_bytes as util_to_bytes
from spacy.util import to_disk as util_to_disk

from spacy_el.io import bytes_to_dir, dir_to_bytes
from spacy_el.models import Encoder


class LinkerStorage:
    """`to_disk`/`from_disk`/`to_bytes`/`from_bytes` of `SapEntityLinker` (which gives `encoder`,
    `index`, `_encoder`, `_index`, `_reranker`, `_search` and `cfg`)."""

    _unpacked: Optional[tempfile.TemporaryDirectory] = None

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """`encoder/` (an HF directory, or an ONNX export) and `index/` (FAISS + table + meta): the pipeline
        then carries everything it needs and loads without the original paths."""
        writers: Dict[str, Callable] = {"encoder": lambda p: self.encoder.save(p), "index": lambda p: self.index.save(p)}
        if self._reranker is not None:
            writers["reranker"] = lambda p: self._reranker.save(p)
        util_to_disk(ensure_path(path), writers, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "LinkerStorage":
        from spacy_el.sap.encoders import load_encoder

        path = ensure_path(path)
        parts: Dict[str, Any] = {}
        util_from_disk(path, {"encoder": lambda p: parts.__setitem__("encoder", load_encoder(p)),
                              "index": lambda p: parts.__setitem__("index", p),
                              "reranker": lambda p: parts.__setitem__("reranker", _load_reranker(p) if p.exists()
                                                                      else None)}, exclude)
        self._set_loaded(parts.get("encoder"), parts.get("index"), mmap=True)
        self._reranker = parts.get("reranker")
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The encoder's and the index's directories as bytes (their files in a msgpack map), so
        `nlp.to_bytes()` carries the whole linker."""
        getters: Dict[str, Callable] = {"encoder": lambda: dir_to_bytes(self.encoder.save),
                                        "index": lambda: dir_to_bytes(self.index.save)}
        if self._reranker is not None:
            getters["reranker"] = lambda: dir_to_bytes(self._reranker.save)
        return util_to_bytes(getters, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "LinkerStorage":
        """Unpack `to_bytes` into a private temporary directory (kept while this component lives:
        an ONNX encoder re-saves from its files) and load the encoder and index from it."""
        from spacy_el.sap.encoders import load_encoder

        unpacked = tempfile.TemporaryDirectory(prefix="sap_linker.")
        root = Path(unpacked.name)
        parts: Dict[str, Any] = {}

        def unpack(key: str, data: bytes) -> None:
            bytes_to_dir(data, root / key)
            loaders = {"encoder": load_encoder, "reranker": _load_reranker}
            parts[key] = loaders[key](root / key) if key in loaders else root / key

        util_from_bytes(bytes_data, {"encoder": lambda b: unpack("encoder", b),
                                     "index": lambda b: unpack("index", b),
                                     "reranker": lambda b: unpack("reranker", b)}, exclude)
        self._set_loaded(parts.get("encoder"), parts.get("index"), mmap=False)
        self._reranker = parts.get("reranker")
        self._unpacked = unpacked
        return self

    def _set_loaded(self, encoder: Optional[Encoder], index_dir: Optional[Path], mmap: bool) -> None:
        if encoder is not None:
            self._encoder = encoder
        if index_dir is not None:
            from spacy_el.kb.index import ConceptIndex

            self._index = ConceptIndex.load(index_dir, self._encoder, mmap=mmap, 
                                            prefetch=self.cfg["performance"]["prefetch_index"])
        self._search = None


def _load_reranker(path: Path):
    from spacy_el.sap.rerank.model import load_reranker

    return load_reranker(path)

