"""A cross-encoder reranker over the linker's top-k: it reads a mention in its context together
with a candidate concept's names and gives the pair one score (a BERT-like model with a one-logit
head), which a name-only bi-encoder cannot: whether "SJS" near "myotonia" is Schwartz-Jampel or
Stevens-Johnson syndrome.

Two runtimes with one interface (`spacy_el.sap.rerank.settings.Reranker`): `CrossEncoderReranker`
(torch, trainable; `cross_encoder`) and `OnnxReranker` (ONNX Runtime, optionally int8, for CPU
serving; `onnx`). This module loads whichever a directory holds (its `reranker.json` names the
runtime); `spacy_el.RerankerFromPath.v1` is the loader `sap_linker.initialize` takes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from spacy.util import registry

from spacy_el.sap.rerank.cross_encoder import CrossEncoderReranker
from spacy_el.sap.rerank.onnx import OnnxReranker
from spacy_el.sap.rerank.settings import Reranker, read_settings


def load_reranker(path: str | Path, *, num_threads: int | None = None) -> Reranker:
    """The torch or ONNX reranker saved in `path` (by its `reranker.json`)."""
    path = Path(path)
    _, runtime = read_settings(path)
    if runtime == OnnxReranker.runtime:
        return OnnxReranker.load(path, num_threads=num_threads)
    return CrossEncoderReranker.load(path, num_threads=num_threads)


@registry.misc("spacy_el.RerankerFromPath.v1")
def reranker_from_path(path: str, num_threads: int | None = None) -> Callable[[], Reranker]:
    """A loader for `[initialize.components.sap_linker.reranker_loader]`: the reranker at `path`."""

    def load() -> Reranker:
        return load_reranker(path, num_threads=num_threads)

    return load
