"""What decides an encoder's vectors besides its weights (`EncoderSettings`) and the file both
runtimes record it in (`sap_encoder.json`): torch-free, so the ONNX runtime and the CLI read it
without importing torch or transformers."""
from __future__ import annotations

from dataclasses import dataclass

from spacy_el.io import InputError

SETTINGS_FILE = "sap_encoder.json"
POOLINGS = ("cls", "mean")
#: The settings that change vectors, hence the fingerprint.
VECTOR_SETTINGS = ("pooling", "max_length", "lowercase", "quantize")


@dataclass(frozen=True)
class EncoderSettings:
    """Everything besides the weights that decides the vectors (and `quantize`, which
    trades a little accuracy for CPU speed)."""

    pooling: str = "cls"
    max_length: int = 25
    lowercase: bool = False
    quantize: bool = False
    base: str = ""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"encoder setting pooling={self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise InputError(f"encoder setting max_length={self.max_length!r}: use an integer >= 2")
