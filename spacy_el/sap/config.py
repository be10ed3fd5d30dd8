"""Training settings as plain data, without torch: the CLI reads its option defaults from here
(`FINETUNE_CONFIG`, `DISTILL_CONFIG`, `TrainConfig()`), so `spacy-el --help` stays fast and the
defaults are written once."""
from __future__ import annotations

from dataclasses import dataclass

from spacy_el.io import InputError

LOSSES = ("multi_similarity", "ntxent", "supcon")


@dataclass(frozen=True)
class TrainConfig:
    """How `spacy_el.sap.train.train_encoder` trains (optimiser, loss, stopping, checkpoints)."""

    epochs: int = 1
    max_steps: int | None = None
    #: Wall-clock budget of this session (a CPU budget); the run stops with a checkpoint, so
    #: `resume` can continue it. Unlike `max_steps` the result then depends on machine speed.
    max_minutes: float | None = None
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    #: "multi_similarity" (SapBERT: MultiSimilarityLoss over TripletMarginMiner's hard pairs) or
    #: "ntxent" (NTXentLoss over all pairs, the softmax objective sentence encoders such as MiniLM
    #: were trained with; gentler when fine-tuning one on a few thousand mentions) or "supcon"
    #: (SupConLoss: the same objective when each text has one positive, as in random batches of
    #: synonym pairs, but O(batch²) memory where NTXentLoss builds a positives × negatives
    #: matrix: an order of magnitude faster at 256 pairs per batch, `benchmarks/pair_losses.py`).
    loss: str = "multi_similarity"
    #: Softmax temperature of "ntxent" and "supcon".
    temperature: float = 0.05
    #: MultiSimilarityLoss / TripletMarginMiner settings (SapBERT's values).
    ms_alpha: float = 1.0
    ms_beta: float = 60.0
    ms_base: float = 0.5
    miner_margin: float = 0.2
    #: With `evaluate`: stop after this many epochs without a better score.
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"loss={self.loss!r}: use one of {', '.join(LOSSES)}")



#: Pretraining on KB synonym pairs (`spacy-el pretrain`).
PRETRAIN_CONFIG = TrainConfig()
#: Fine-tuning on annotated corpus mentions (`spacy-el finetune`).
FINETUNE_CONFIG = TrainConfig(epochs=3, patience=1)
#: Distilling a small student from a teacher encoder (`spacy-el distill`).
DISTILL_CONFIG = TrainConfig(epochs=10, lr=5e-4, patience=2)
