"""The reranker's training defaults as plain data (no torch), so the CLI reads them cheaply."""
from __future__ import annotations

from spacy_el.sap.config import TrainConfig

#: A few epochs of a small cross-encoder, early stopping on dev after one epoch without gain.
RERANK_CONFIG = TrainConfig(epochs=2, lr=3e-5, patience=1, warmup_steps=50, checkpoint_every=200)
