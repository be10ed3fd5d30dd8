"""Loading any encoder: `load_encoder` picks the runtime a directory was saved for (torch
`SapEncoder`, or `OnnxEncoder` for an `export-onnx` directory), and `spacy_el.EncoderFromPath.v1`
is the registered loader that `sap_linker`'s `initialize` takes (spaCy's `kb_loader` pattern).
Both return what `spacy_el.models.Encoder` describes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from spacy.util import registry

from spacy_el.io import InputError
from spacy_el.models import Encoder
from spacy_el.sap.settings import SETTINGS_FILE


def load_encoder(name_or_path: str | Path, **options) -> Encoder:
    """A SapEncoder, or an OnnxEncoder when the directory is an ONNX export (`export-onnx`).
    Options an ONNX encoder cannot change (pooling, quantize…) are refused, not ignored."""
    path = Path(name_or_path)
    settings = path / SETTINGS_FILE
    if path.is_dir() and settings.exists() and _runtime(settings) == "onnx":
        from spacy_el.sap.onnx import OnnxEncoder

        fixed = {k: v for k, v in options.items() if k not in ("device", "num_threads") and v is not None}
        if fixed:
            raise InputError(f"{path} is an ONNX export: its {', '.join(sorted(fixed))} are fixed at export time; "
                             "export again from the torch encoder to change them")
        return OnnxEncoder.load(path, **{k: v for k, v in options.items() if v is not None})
    try:
        from spacy_el.sap.encoder import SapEncoder
    except ImportError as err:
        if err.name not in ("torch", "transformers"):
            raise
        raise InputError(f"{name_or_path}: a PyTorch encoder needs torch and transformers, which are not installed "
                         "(pip install 'spacy-el[train]'); or serve its ONNX export instead "
                         f"(spacy-el export-onnx {name_or_path} OUT_DIR)") from None
    return SapEncoder.load(name_or_path, **options)


def _runtime(settings: Path) -> str:
    try:
        return json.loads(settings.read_text(encoding="utf-8")).get("runtime", "torch")
    except json.JSONDecodeError as err:
        raise InputError(f"{settings}: not valid JSON ({err.msg}, line {err.lineno}); "
                         "save or export the encoder again") from None


@registry.misc("spacy_el.EncoderFromPath.v1")
def encoder_from_path(path: str, device: str = "auto", num_threads: int | None = None) -> Callable[[], Encoder]:
    """A loader for `[initialize.components.sap_linker.encoder_loader]`: the encoder at `path`
    (an encoder directory, an ONNX export, or a hub name), loaded when the pipeline is initialized."""

    def load() -> Encoder:
        return load_encoder(path, device=device, num_threads=num_threads)

    return load
