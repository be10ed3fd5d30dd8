"""ONNX Runtime for the encoder and the reranker: one session type that survives `fork`, the
execution providers a device asks for, and the export of a torch model (optionally int8).

Sessions run without busy-waiting between runs (spinning threads starved FAISS's search threads
of the same cores). A forked child (`nlp.pipe(n_process=…)`) inherits a session but not its
threads: it builds a one-thread session on first use, not inside the fork handler, where the
runtime's state may be locked; the inherited one is kept, never destroyed
(`spacy_el.models.keep_inherited`): destroying it hung every child of a process that held one.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from spacy_el.io import InputError
from spacy_el.models import after_fork_in_child, keep_inherited, runtime_threads

CPU = ("CPUExecutionProvider",)

#: Every session alive, so a forked child can replace each.
_LIVE: "weakref.WeakSet[OnnxSession]" = weakref.WeakSet()


@after_fork_in_child
def _sessions_after_fork() -> None:
    for session in list(_LIVE):
        session.after_fork()


def providers_for(device: str) -> tuple[str, ...]:
    """"auto" → CUDA when onnxruntime-gpu sees one, else the CPU; "cuda" without CUDA warns and
    falls back to the CPU (as the torch encoder does)."""
    import onnxruntime as ort

    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise InputError(f"encoder device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not has_cuda:
        warnings.warn(f"device={device!r} requested but ONNX Runtime has no CUDA provider here; using the CPU")
    if device != "cpu" and has_cuda:
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return CPU


class OnnxSession:
    """An inference session over `model_file` that feeds a model only the inputs it declares."""

    def __init__(self, model_file: str | Path, *, num_threads: int | None = None,
                 providers: Sequence[str] = CPU) -> None:
        self.model_file = str(model_file)
        self.providers = tuple(providers)
        self._session: Any = self._new(runtime_threads(num_threads))
        self.inputs = {i.name for i in self._session.get_inputs()}
        _LIVE.add(self)

    def _new(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self.model_file, options, providers=list(self.providers))

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0].startswith("CUDA") else "cpu"

    def after_fork(self) -> None:
        keep_inherited(self._session)
        self._session = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's first output."""
        if self._session is None:
            self._session = self._new(1)
        return self._session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]


def fast_tokenizer(hf_tokenizer, what: str):
    """A copy of an HF tokenizer's fast (Rust) tokenizer, which the ONNX runtimes read."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(f"{what}: its tokenizer has no fast (Rust) version, which the ONNX runtime needs")
    return type(backend).from_str(backend.to_str())


def export_model(model, inputs: Mapping[str, Any], output_name: str, output_axes: Mapping[int, str],
                 model_file: str | Path, *, quantize: bool, opset: int = 17) -> None:
    """Export a torch model (on the CPU, in eval mode) to `model_file`, every input with dynamic
    batch and token axes. `quantize`: int8 Linear weights (ONNX Runtime's dynamic quantization,
    per output channel)."""
    import torch

    names = list(inputs)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(model, tuple(inputs[k] for k in names), str(raw), input_names=names,
                              output_names=[output_name],
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names}
                              | {output_name: dict(output_axes)},
                              dynamo=False, opset_version=opset)
        if not quantize:
            shutil.copyfile(raw, model_file)
            return
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to run a pre-processing step, logged on the root logger
        try:
            quantize_dynamic(str(raw), str(model_file), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
