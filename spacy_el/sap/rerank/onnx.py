"""`OnnxReranker`: the reranker served by ONNX Runtime (fp32 or int8 weights) without torch or
transformers, and `export_onnx`, which makes one from a torch reranker. A directory holds
`model.onnx`, `tokenizer.json` and `reranker.json`."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from spacy_el.io import InputError, atomic_dir
from spacy_el.sap.rerank.inputs import ListwiseInputs, list_scores, pair_scores, paired_scores
from spacy_el.sap.rerank.settings import BATCH_SIZE, settings_of, write_settings
from spacy_el.sap.runtime import OnnxSession, export_model, fast_tokenizer

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class OnnxReranker:
    """The reranker served by ONNX Runtime (fp32 or int8 weights), without torch or transformers."""

    runtime = "onnx"

    def __init__(self, directory: Path, settings, num_threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.settings = settings
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self._lists = ListwiseInputs(self.tokenizer, settings, (self.tokenizer.padding or {}).get("pad_id", 0)) \
            if settings.listwise else None
        self.session = OnnxSession(self.directory / MODEL_FILE, num_threads=num_threads)

    @classmethod
    def load(cls, path: str | Path, *, num_threads: int | None = None) -> "OnnxReranker":
        path = Path(path)
        settings = settings_of(path, cls.runtime)
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (path / name).exists():
                raise InputError(f"{path}: {name} is missing; export the reranker again "
                                 "(`spacy-el export-reranker RERANKER_DIR OUTPUT_DIR`)")
        return cls(path, settings, num_threads)

    def save(self, path: str | Path) -> None:
        with atomic_dir(path) as tmp:
            for name in (MODEL_FILE, TOKENIZER_FILE):
                shutil.copyfile(self.directory / name, Path(tmp) / name)
            write_settings(Path(tmp), self.settings, self.runtime)

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
        if self._lists is not None:
            return list_scores(self._lists, contexts, groups, batch_size, lambda feeds: self.session.run(feeds)[..., 0])
        return paired_scores(contexts, groups, batch_size, self._score_pairs)

    def _score_pairs(self, contexts: list[str], candidates: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(zip(contexts, candidates)))
        return self.session.run({"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)})[:, 0]

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One score per (context, candidate) pair."""
        return pair_scores(self, contexts, candidates, batch_size)


def export_onnx(reranker, output: str | Path, *, quantize: bool = True, opset: int = 17) -> OnnxReranker:
    """Export a torch reranker (`CrossEncoderReranker`) to `output` (atomically); `quantize`: int8
    weights (ONNX Runtime's dynamic quantization, per channel), the CPU serving form."""
    from spacy_el.sap.rerank.cross_encoder import CrossEncoderReranker

    if not isinstance(reranker, CrossEncoderReranker):
        raise InputError("export needs a torch reranker (a `spacy-el train-reranker` directory)")
    tokenizer = fast_tokenizer(reranker.tokenizer, "the reranker")
    batch = reranker.tokenize(["a b [c] d", "e"], ["f", "g h"])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    axes = {0: "batch", 1: "tokens"} if reranker.settings.listwise else {0: "batch"}
    with atomic_dir(output) as tmp:
        export_model(reranker.model.eval(), inputs, "logits", axes, Path(tmp) / MODEL_FILE, quantize=quantize,
                     opset=opset)
        tokenizer.enable_truncation(max_length=reranker.settings.max_length, strategy="longest_first")
        tokenizer.enable_padding(pad_id=reranker.tokenizer.pad_token_id, pad_token=reranker.tokenizer.pad_token)
        tokenizer.save(str(Path(tmp) / TOKENIZER_FILE))
        write_settings(Path(tmp), reranker.settings, OnnxReranker.runtime)
    return OnnxReranker.load(output, num_threads=reranker.num_threads)
