"""MultiHashEmbed predicting through folded tables: the same vectors as spaCy's layer, and
never stale: after an update in place, under swapped (averaged) weights and after a load."""
from __future__ import annotations

import numpy as np
import spacy
import pytest
from spacy.ml.models.tok2vec import MultiHashEmbed
from thinc.api import Adam

from spacy_el.ner.folding import fold_for_prediction

TEXTS = ["Barack Obama visited Paris .", "", "Unknownword and qwertyuiop in Berlin !", "a"]


@pytest.fixture
def nlp():
    nlp = spacy.blank("en")
    rng = np.random.default_rng(0)
    for word in ["Barack", "Obama", "Paris", "Berlin", "and", "in", "."]:
        nlp.vocab.set_vector(word, rng.normal(size=6).astype("f"))
    return nlp


def build(static: bool):
    return MultiHashEmbed(width=8, attrs=["NORM", "PREFIX", "SHAPE"], rows=[50, 20, 10], include_static_vectors=static)


@pytest.mark.parametrize("static", [True, False])
def test_folded_prediction_equals_the_layer(nlp, static):
    docs = [nlp(text) for text in TEXTS]
    plain, folded = build(static), fold_for_prediction(build(static))
    plain.initialize(X=docs)
    folded.initialize(X=docs)
    folded.from_bytes(plain.to_bytes())
    expected, got = plain.predict(docs), folded.predict(docs)
    assert [g.shape for g in got] == [e.shape for e in expected] == [(len(d), 8) for d in docs]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert [g.shape for g in folded.predict([nlp("")])] == [(0, 8)]


def test_folded_tables_follow_the_weights(nlp):
    docs = [nlp(text) for text in TEXTS]
    model = fold_for_prediction(build(True))
    model.initialize(X=docs)
    before = model.predict(docs)
    optimizer = Adam(0.1, use_averages=True)
    for _ in range(3):  # the optimizer updates the weights in place
        Ys, backprop = model.begin_update(docs)
        backprop([np.ones_like(Y) for Y in Ys])
        model.finish_update(optimizer)
    reference = build(True)
    reference.initialize(X=docs)
    reference.from_bytes(model.to_bytes())
    after = model.predict(docs)
    assert not np.allclose(after[0], before[0])
    for e, g in zip(reference.predict(docs), after):
        np.testing.assert_allclose(g, e, atol=1e-5)
    with model.use_params(optimizer.averages):  # spaCy evaluates with the averaged weights
        averaged = model.predict(docs)
        assert not np.allclose(averaged[0], after[0])
        with reference.use_params({(reference_node.id, name): value
                                   for (node_id, name), value in optimizer.averages.items()
                                   for node, reference_node in zip(model.walk(), reference.walk())
                                   if node.id == node_id}):
            for e, g in zip(reference.predict(docs), averaged):
                np.testing.assert_allclose(g, e, atol=1e-5)
    np.testing.assert_allclose(model.predict(docs)[0], after[0], atol=1e-6)


def test_not_a_multi_hash_embed():
    from thinc.api import Linear
    with pytest.raises(ValueError, match="not a MultiHashEmbed"):
        fold_for_prediction(Linear(2, 2))
