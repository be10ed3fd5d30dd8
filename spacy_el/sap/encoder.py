"""SapEncoder: a Hugging Face BERT-like model that maps names to L2-normalised vectors.

The same object serves inference (`embed`, no autograd, length-sorted batches) and training
(`encode_for_training`, with gradients), so pretraining and fine-tuning train exactly the model
the linker later uses. It is saved as a plain HF directory plus `sap_encoder.json`, which records
the settings that change vectors and a fingerprint of weights + settings, so an index can prove
which encoder built it.

Device: "auto" picks CUDA when present (with bf16/fp16 autocast) and the CPU otherwise; an
explicit "cuda" request on a machine without CUDA warns and falls back to the CPU, so a pipeline
packaged on a GPU box still loads on a laptop.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from spacy_el.io import InputError, atomic_dir, atomic_write
from spacy_el.models import embed_in_batches, resolve_model
from spacy_el.sap.settings import SETTINGS_FILE, VECTOR_SETTINGS, EncoderSettings

def resolve_device(device: str) -> torch.device:
    """"auto" → CUDA if available else CPU; "cuda" without CUDA warns and falls back to the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"encoder device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device={device!r} requested but CUDA is not available; using the CPU instead")
        return torch.device("cpu")
    return dev


def _st_pooling(path: Path) -> str | None:
    """The pooling a sentence-transformers directory was trained with (MiniLM: mean), if any."""
    cfg = path / "1_Pooling" / "config.json"
    if not cfg.exists():
        return None
    data = json.loads(cfg.read_text())
    if data.get("pooling_mode_mean_tokens"):
        return "mean"
    if data.get("pooling_mode_cls_token"):
        return "cls"
    return None


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run torch on `num_threads` intra-op threads inside the block (None: leave it as it is)."""
    if not num_threads:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class SapEncoder:
    """Names → float32 L2-normalised vectors (see module docstring)."""

    def __init__(self, model, tokenizer, settings: EncoderSettings, device: torch.device,
                 num_threads: int | None = None) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.num_threads = num_threads
        self._fingerprint: tuple[tuple[int, ...], str] | None = None
        self._fast_model: tuple[tuple[int, ...], torch.nn.Module] | None = None

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def load(cls, name_or_path: str | Path, *, device: str = "auto", pooling: str | None = None,
             max_length: int | None = None, lowercase: bool | None = None, quantize: bool | None = None,
             num_threads: int | None = None) -> "SapEncoder":
        """Load a local HF directory or a hub name. Settings: explicit arguments win, then our
        `sap_encoder.json`, then a sentence-transformers pooling config, then the defaults."""
        from transformers import AutoModel, AutoTokenizer

        resolved = resolve_model(name_or_path)
        local = Path(resolved)
        saved: dict = {}
        if local.is_dir() and (local / SETTINGS_FILE).exists():
            saved = json.loads((local / SETTINGS_FILE).read_text())
        defaults = EncoderSettings()
        settings = EncoderSettings(
            pooling=pooling or saved.get("pooling") or (_st_pooling(local) if local.is_dir() else None)
            or defaults.pooling,
            max_length=max_length if max_length is not None else saved.get("max_length", defaults.max_length),
            lowercase=lowercase if lowercase is not None else saved.get("lowercase", defaults.lowercase),
            quantize=quantize if quantize is not None else saved.get("quantize", defaults.quantize),
            base=saved.get("base") or str(name_or_path),
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            model = AutoModel.from_pretrained(resolved)
        except (OSError, ValueError) as err:
            raise InputError(
                f"encoder {name_or_path!r}: cannot load a Hugging Face model from it ({err}); "
                "pass a local model directory or a hub name reachable from this machine"
            ) from None
        encoder = cls(model, tokenizer, settings, resolve_device(device), num_threads)
        if saved.get("fingerprint") and all(saved.get(k) == getattr(settings, k) for k in VECTOR_SETTINGS):
            # The weights on disk are the ones fingerprinted at save time: trust the record
            # instead of re-hashing every tensor, which dominated a packaged pipeline's cold load.
            encoder._fingerprint = (encoder._weights_version(), saved["fingerprint"])
        return encoder

    def save(self, path: str | Path) -> None:
        """Write a plain HF directory (model + tokenizer) plus `sap_encoder.json`, atomically."""
        with atomic_dir(path) as tmp:
            model = self.model.module if hasattr(self.model, "module") else self.model
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta = dataclasses.asdict(self.settings) | {"fingerprint": self.fingerprint, "dim": self.dim}
            with atomic_write(Path(tmp) / SETTINGS_FILE) as f:
                json.dump(meta, f, indent=2)

    # ---------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _weights_version(self) -> tuple[int, ...]:
        """Bumps whenever any parameter is changed in place (optimizer steps), so cached
        fingerprints and quantized copies are rebuilt only after the weights moved."""
        return tuple(p._version for p in self.model.state_dict().values())

    @property
    def fingerprint(self) -> str:
        """Stable hash of the fp32 weights and the settings that change vectors."""
        version = self._weights_version()
        if self._fingerprint is None or self._fingerprint[0] != version:
            h = hashlib.blake2b(digest_size=16)
            s = self.settings
            h.update(json.dumps([getattr(s, k) for k in VECTOR_SETTINGS]).encode())
            for key, tensor in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = (version, h.hexdigest())
        return self._fingerprint[1]

    @property
    def uncased(self) -> bool:
        """True when texts that differ only in case become the same model input (an uncased
        tokenizer, or `lowercase`), so they get the same vector."""
        if self.settings.lowercase:
            return True
        ids = self.tokenizer(["Aniridia TYPE", "aniridia type"])["input_ids"]
        return ids[0] == ids[1]

    # ---------------------------------------------------------------- encoding
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize (lowercased if set), truncated to `max_length`, padded, on the device."""
        if self.settings.lowercase:
            texts = [t.lower() for t in texts]
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.settings.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[CLS] vector (SapBERT) or the mask-weighted mean of tokens (sentence-transformers)."""
        if self.settings.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def encode_for_training(self, texts: Sequence[str], model: torch.nn.Module | None = None) -> torch.Tensor:
        """Pooled embeddings with gradients (not normalised: the loss normalises). `model` lets
        the training loop pass its DistributedDataParallel wrapper of `self.model`."""
        batch = self.tokenize(texts)
        out = (model or self.model)(**batch)
        return self.pool(out.last_hidden_state, batch["attention_mask"])

    def _inference_model(self) -> torch.nn.Module:
        """`self.model`, or its dynamically int8-quantized copy when `quantize` is on (CPU only)."""
        if not self.settings.quantize:
            return self.model
        if self.device.type != "cpu":
            warnings.warn("quantize=True applies to CPU inference only; running unquantized on the GPU")
            return self.model
        version = self._weights_version()
        if self._fast_model is None or self._fast_model[0] != version:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch deprecates quantized tensors in favour of torchao
                warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
                fast = quantize_dynamic(copy.deepcopy(self.model).cpu().eval(), {torch.nn.Linear},
                                        dtype=torch.qint8)
            self._fast_model = (version, fast)
        return self._fast_model[1]

    def _threads(self):
        return torch_threads(self.num_threads)

    def _autocast(self):
        if self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def embed(self, texts: Sequence[str], batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        """float32 (n, dim) L2-normalised vectors. Texts are batched by length (less padding)
        and returned in input order."""
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}: use a positive integer")
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._inference_model()
        was_training = model.training
        model.eval()

        def run(batch: list[str]) -> np.ndarray:
            tokens = self.tokenize(batch)
            pooled = self.pool(model(**tokens).last_hidden_state, tokens["attention_mask"]).float()
            return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()

        try:
            with self._threads(), torch.inference_mode(), self._autocast():
                return embed_in_batches(texts, self.dim, batch_size, run, show_progress)
        finally:
            model.train(was_training)
