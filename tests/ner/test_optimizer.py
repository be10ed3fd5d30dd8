"""`spacy_el.GroupedAdam.v1`: parameters matching a pattern move at their group's learning rate."""
from __future__ import annotations

import numpy as np
import pytest
from spacy.util import registry


def first_step(optimizer, name: str) -> float:
    """How far one Adam step moves a weight (Adam's first step is about learn_rate × sign(grad))."""
    weights, grad = np.zeros(4, dtype="f"), np.ones(4, dtype="f")
    new, _ = optimizer((7, name), weights.copy(), grad)
    return float(np.abs(new).max())


def test_parameters_of_a_group_move_at_their_scaled_rate():
    adam = registry.resolve({"o": {"@optimizers": "spacy_el.GroupedAdam.v1", "learn_rate": 0.002, "use_averages": False,
                                   "lr_scales": {r"^(embeddings|encoder)\.": 0.025, "frozen": 0.0}}})["o"]
    tagger = first_step(adam, "lstm.weight_ih_l0")
    bert = first_step(adam, "encoder.layer.3.attention.self.query.weight")
    assert tagger == pytest.approx(0.002, rel=1e-3) and bert == pytest.approx(0.002 * 0.025, rel=1e-3)
    assert first_step(adam, "a frozen one") == 0.0
    plain = registry.resolve({"o": {"@optimizers": "Adam.v1", "learn_rate": 0.002, "use_averages": False}})["o"]
    assert first_step(plain, "encoder.layer.3.attention.self.query.weight") == pytest.approx(tagger)


def test_a_bad_pattern_or_factor_names_the_setting():
    with pytest.raises(ValueError, match=r"lr_scales: '\(' is not a regular expression"):
        registry.resolve({"o": {"@optimizers": "spacy_el.GroupedAdam.v1", "lr_scales": {"(": 0.1}}})
    with pytest.raises(ValueError, match="use a factor >= 0"):
        registry.resolve({"o": {"@optimizers": "spacy_el.GroupedAdam.v1", "lr_scales": {"x": -1}}})
