"""OnnxEncoder: a SapEncoder exported to ONNX and served by ONNX Runtime.

Why a second runtime: serving needs neither autograd nor `transformers`, whose import alone
cost a packaged pipeline over a second of its cold load, and ONNX Runtime runs MiniLM about twice
as fast as torch on this CPU. With `quantize=True` the export's Linear weights become int8
(ONNX Runtime's dynamic quantization, per output channel), about twice as fast again, at a mean
cosine of 0.99 to the fp32 vectors (torch's per-tensor dynamic int8: 0.94).

It has SapEncoder's inference interface (`embed`, `dim`, `fingerprint`, `settings`, `device`,
`save`), so `ConceptIndex` and `sap_linker` take either. Fingerprints: an fp32 export keeps its
source encoder's fingerprint (its vectors equal the source's to 1e-6), so indexes built with the
torch encoder stay valid; an int8 export gets a fingerprint of its own, so its index must be
built with it (`build-index` accepts its directory like any encoder's).

A directory holds `model.onnx`, `tokenizer.json` (the fast tokenizer with this encoder's
truncation and padding) and `sap_encoder.json` (settings, `"runtime": "onnx"`, fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from spacy_el.io import InputError, atomic_dir, atomic_write
from spacy_el.models import embed_in_batches
from spacy_el.sap.runtime import OnnxSession, export_model, fast_tokenizer, providers_for
from spacy_el.sap.settings import SETTINGS_FILE, EncoderSettings

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
RUNTIME = "onnx"


class OnnxEncoder:
    """Names → float32 L2-normalised vectors with ONNX Runtime (see the module docstring)."""

    runtime = RUNTIME

    def __init__(self, directory: Path, meta: dict, *, device: str = "auto", num_threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.meta = meta
        self.settings = EncoderSettings(**{f.name: meta[f.name] for f in dataclasses.fields(EncoderSettings)
                                           if f.name in meta})
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self.session = OnnxSession(self.directory / MODEL_FILE, num_threads=num_threads,
                                   providers=providers_for(device))
        self.device = self.session.device

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def uncased(self) -> bool:
        """True when texts that differ only in case become the same model input."""
        if self.settings.lowercase:
            return True
        a, b = self.tokenizer.encode_batch(["Aniridia TYPE", "aniridia type"])
        return a.ids == b.ids

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", num_threads: int | None = None) -> "OnnxEncoder":
        path = Path(path)
        settings = path / SETTINGS_FILE
        if not settings.exists():
            raise InputError(f"{path}: not an ONNX encoder directory (no {SETTINGS_FILE}); "
                             "make one with `spacy-el export-onnx ENCODER_DIR OUTPUT_DIR`")
        meta = json.loads(settings.read_text())
        if meta.get("runtime") != RUNTIME:
            raise InputError(f"{settings}: runtime is {meta.get('runtime', 'torch')!r}, not 'onnx'; "
                             "load it with SapEncoder.load, or export it with `spacy-el export-onnx`")
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (path / name).exists():
                raise InputError(f"{path}: {name} is missing; re-export the encoder with `spacy-el export-onnx`")
        return cls(path, meta, device=device, num_threads=num_threads)

    @classmethod
    def export(cls, encoder, output: str | Path, *, quantize: bool = False, opset: int = 17) -> "OnnxEncoder":
        """Export a SapEncoder's fp32 weights to `output` (atomically), int8 when `quantize`."""
        from spacy_el.sap.encoder import SapEncoder

        if not isinstance(encoder, SapEncoder):
            raise InputError("export-onnx needs a torch SapEncoder (an HF or SAP encoder directory)")
        tokenizer = fast_tokenizer(encoder.tokenizer, f"encoder {encoder.settings.base!r}")
        fp32 = dataclasses.replace(encoder.settings, quantize=False)
        source_fp = encoder.fingerprint if not encoder.settings.quantize else _with_settings(encoder, fp32)
        settings = dataclasses.replace(fp32, quantize=quantize)
        fingerprint = source_fp if not quantize else \
            hashlib.blake2b(f"{source_fp}:onnx-int8-per-channel".encode(), digest_size=16).hexdigest()
        model = encoder.model.module if hasattr(encoder.model, "module") else encoder.model
        batch = encoder.tokenize(["a b", "c"])
        with atomic_dir(output) as tmp:
            export_model(model.to("cpu").eval(), {k: batch[k].cpu() for k in ("input_ids", "attention_mask")},
                         "hidden", {0: "batch", 1: "tokens"}, Path(tmp) / MODEL_FILE, quantize=quantize, opset=opset)
            model.to(encoder.device)
            tokenizer.enable_truncation(max_length=settings.max_length)
            tokenizer.enable_padding(pad_id=encoder.tokenizer.pad_token_id, pad_token=encoder.tokenizer.pad_token)
            tokenizer.save(str(Path(tmp) / TOKENIZER_FILE))
            meta = dataclasses.asdict(settings) | {"runtime": RUNTIME, "fingerprint": fingerprint, "dim": encoder.dim,
                                                   "source_fingerprint": source_fp}
            with atomic_write(Path(tmp) / SETTINGS_FILE) as f:
                json.dump(meta, f, indent=2)
        return cls.load(output, device="cpu", num_threads=encoder.num_threads)

    def save(self, path: str | Path) -> None:
        """Copy the three files to `path` (a pipeline's `encoder/`), atomically."""
        with atomic_dir(path) as tmp:
            for name in (MODEL_FILE, TOKENIZER_FILE):
                shutil.copyfile(self.directory / name, Path(tmp) / name)
            with atomic_write(Path(tmp) / SETTINGS_FILE) as f:
                json.dump(self.meta, f, indent=2)

    # ---------------------------------------------------------------- encoding
    def embed(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """float32 (n, dim) L2-normalised vectors, in input order (batched by length)."""
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}: use a positive integer")
        return embed_in_batches(texts, self.dim, batch_size, self._run, show_progress)

    def _run(self, batch: list[str]) -> np.ndarray:
        if self.settings.lowercase:
            batch = [t.lower() for t in batch]
        encodings = self.tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self.session.run({"input_ids": ids, "attention_mask": mask})
        if self.settings.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _with_settings(encoder, settings) -> str:
    """The fingerprint `encoder` would have with other settings (same weights)."""
    import copy

    other = copy.copy(encoder)
    other.settings, other._fingerprint = settings, None
    return other.fingerprint
