"""`CrossEncoderReranker`: the torch reranker, trainable, saved as an HF model + tokenizer and
`reranker.json`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from spacy_el.io import InputError, atomic_dir
from spacy_el.models import resolve_model
from spacy_el.sap.rerank.inputs import ListwiseInputs, list_scores, pair_scores, paired_scores, pairs
from spacy_el.sap.rerank.settings import BATCH_SIZE, RerankerSettings, settings_of, write_settings

class CrossEncoderReranker:
    """The torch reranker (trainable; `model`, `device`, `save` as the training loop expects)."""

    runtime = "torch"

    def __init__(self, model, tokenizer, settings: RerankerSettings, num_threads: int | None = None) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = torch.device("cpu")
        self.num_threads = num_threads
        self._list_inputs: ListwiseInputs | None = None

    @staticmethod
    def _model_class(settings: RerankerSettings):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        return AutoModelForTokenClassification if settings.listwise else AutoModelForSequenceClassification

    @classmethod
    def from_base(cls, base: str | Path, *, layers: int | None = None, settings: RerankerSettings | None = None,
                  seed: int = 0, num_threads: int | None = None) -> "CrossEncoderReranker":
        """A new reranker from an HF encoder (e.g. the packaged MiniLM), keeping its first
        `layers` transformer layers (all when None) and a fresh one-logit head (seeded): on the
        sequence for pairs, on each token for listwise inputs."""
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        resolved = resolve_model(base)
        try:
            config = AutoConfig.from_pretrained(resolved, num_labels=1)
            if layers is not None:
                if not 1 <= layers <= config.num_hidden_layers:
                    raise InputError(f"layers={layers}: {base} has {config.num_hidden_layers} transformer layers; "
                                     f"use 1 to {config.num_hidden_layers}")
                config.num_hidden_layers = layers
            torch.manual_seed(seed)
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
            try:
                model = cls._model_class(settings or RerankerSettings()).from_pretrained(resolved, config=config)
            finally:
                hf_logging.set_verbosity(verbosity)
            tokenizer = AutoTokenizer.from_pretrained(resolved)
        except (OSError, ValueError) as err:
            raise InputError(f"reranker base {base!r}: cannot load a Hugging Face model from it ({err}); "
                             "pass a local model directory such as the packaged MiniLM") from None
        settings = dataclasses.replace(settings or RerankerSettings(), layers=config.num_hidden_layers, base=str(base))
        return cls(model, tokenizer, settings, num_threads)

    @classmethod
    def load(cls, path: str | Path, *, num_threads: int | None = None) -> "CrossEncoderReranker":
        from transformers import AutoTokenizer

        path = Path(path)
        settings = settings_of(path, cls.runtime)
        model = cls._model_class(settings).from_pretrained(path)
        return cls(model, AutoTokenizer.from_pretrained(path), settings, num_threads)

    def save(self, path: str | Path) -> None:
        """An HF directory (model + tokenizer) plus `reranker.json`, atomically."""
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            write_settings(Path(tmp), self.settings, self.runtime)

    def _threads(self):
        from spacy_el.sap.encoder import torch_threads

        return torch_threads(self.num_threads)

    def tokenize(self, contexts: Sequence[str], candidates: Sequence[str]):
        return self.tokenizer(list(contexts), list(candidates), truncation="longest_first",
                              max_length=self.settings.max_length, padding=True, return_tensors="pt")

    @property
    def _lists(self) -> ListwiseInputs:
        if self._list_inputs is None:
            self._list_inputs = ListwiseInputs(self.tokenizer.backend_tokenizer, self.settings,
                                               self.tokenizer.pad_token_id)
        return self._list_inputs

    def group_logits(self, contexts: Sequence[str], groups: Sequence[Sequence[str]], model=None) -> list:
        """One score tensor per context over its candidates, with gradients (training); `model`
        lets the loop pass a DDP wrapper."""
        import torch

        model = model or self.model
        if not self.settings.listwise:
            flat = model(**self.tokenize(*pairs(contexts, groups))).logits[:, 0]
            return list(torch.split(flat, [len(g) for g in groups]))
        out: list = [None] * len(contexts)
        for idx, feeds, spans in self._lists.batches(contexts, groups, len(contexts) or 1):
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            tokens = model(**inputs).logits[..., 0]
            for row, i in enumerate(idx):
                out[i] = torch.stack([tokens[row, a:b].mean() for a, b in spans[row]])
        return out

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with self._threads(), torch.inference_mode():
                if not self.settings.listwise:
                    return paired_scores(contexts, groups, batch_size, lambda ctx, cand: self.model(
                        **self.tokenize(ctx, cand)).logits[:, 0].float().numpy())
                return list_scores(self._lists, contexts, groups, batch_size, lambda feeds: self.model(
                    **{k: torch.from_numpy(v) for k, v in feeds.items()}).logits[..., 0].float().numpy())
        finally:
            self.model.train(was_training)

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One score per (context, candidate) pair."""
        return pair_scores(self, contexts, candidates, batch_size)

