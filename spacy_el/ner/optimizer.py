"""Adam with a learning rate per parameter group, for training a tagger on top of a transformer
that is fine-tuned with it.

A BiLSTM-CRF learns from scratch at ~2e-3; a pretrained transformer fine-tuned at that rate forgets
what it knew within a few hundred steps (BERT-style models are fine-tuned at 2e-5 to 1e-4). spaCy's
trf configs train everything at the transformer's rate, which leaves a randomly initialised BiLSTM
barely trained; and Adam normalises the gradient, so the listener's `grad_factor` cannot slow the
transformer down. thinc's `Optimizer` already takes a per-call `lr_scale`: this one sets it from the
parameter's name (torch parameter names for PyTorch-wrapped layers, e.g. a Hugging Face model's
`encoder.layer.3.attention.self.query.weight`; thinc parameter names such as `W` otherwise).
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from thinc.api import Optimizer
from thinc.types import FloatsXd

from spacy.util import registry


class GroupedAdam(Optimizer):
    """`Optimizer` whose parameters matching a pattern of `lr_scales` are updated at
    `learn_rate × scale` (the first pattern that matches, searched in the parameter's name)."""

    def __init__(self, *args, lr_scales: Optional[Dict[str, float]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lr_groups = []
        for pattern, scale in (lr_scales or {}).items():
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise ValueError(f"[training.optimizer] lr_scales: {pattern!r} is not a regular expression "
                                 f"({err})") from None
            if not scale >= 0:
                raise ValueError(f"[training.optimizer] lr_scales: {pattern!r} = {scale}: use a factor >= 0")
            self.lr_groups.append((compiled, float(scale)))
        self._scale_of: Dict[str, float] = {}

    def scale_of(self, name: str) -> float:
        if name not in self._scale_of:
            self._scale_of[name] = next((scale for pattern, scale in self.lr_groups if pattern.search(name)), 1.0)
        return self._scale_of[name]

    def __call__(self, key: Tuple[int, str], weights: FloatsXd, gradient: FloatsXd, *, lr_scale: float = 1.0):
        return super().__call__(key, weights, gradient, lr_scale=lr_scale * self.scale_of(str(key[1])))


@registry.optimizers("spacy_el.GroupedAdam.v1")
def make_grouped_adam(
    learn_rate: float = 0.001,
    lr_scales: Dict[str, float] = {},  # noqa: B006 - a config default, never mutated
    *,
    L2: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    grad_clip: float = 1.0,
    use_averages: bool = True,
    L2_is_weight_decay: bool = True,
) -> Optimizer:
    """thinc's `Adam.v1` plus `lr_scales`: {regular expression over parameter names: learning-rate
    factor}, e.g. `{"^(embeddings|encoder)\\\\.": 0.025}` fine-tunes a Hugging Face transformer at
    a fortieth of the rate of the layers above it. `learn_rate` may be a schedule, as in Adam.v1."""
    return GroupedAdam(learn_rate, L2=L2, beta1=beta1, beta2=beta2, eps=eps, grad_clip=grad_clip,
                       L2_is_weight_decay=L2_is_weight_decay, use_averages=use_averages, lr_scales=lr_scales)
