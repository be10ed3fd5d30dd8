"""bilstm_ner: training, predictions, edge-case docs, serialization, multiprocessing, config errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Config

from spacy_el.ner.crf import viterbi
from spacy_el.ner.pipe import BiLSTMEntityRecognizer, softmax_as_crf
from spacy_el.ner.vectors import init_glove_vectors


REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ner_bilstm.cfg"


def ents(doc: Doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def test_overfits_tiny_sample(trained_nlp, kit):
    for text, gold in kit.TRAIN_DATA:
        assert ents(trained_nlp(text)) == gold
    scores = trained_nlp.evaluate(kit.make_examples(trained_nlp))
    assert scores["ents_f"] == 1.0
    assert set(scores["ents_per_type"]) == {"PER", "LOC", "ORG"}


def test_tags_and_assigned_attributes(trained_nlp):
    ner = trained_nlp.get_pipe("bilstm_ner")
    assert isinstance(ner, BiLSTMEntityRecognizer)
    assert ner.labels == ("LOC", "ORG", "PER")
    assert ner.tags == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    doc = trained_nlp("Barack Obama visited Paris last week .")
    assert [t.ent_iob_ for t in doc] == ["B", "I", "O", "B", "O", "O", "O"]
    assert [t.ent_type_ for t in doc][:2] == ["PER", "PER"]


def test_empty_and_whitespace_docs(trained_nlp, kit):
    assert trained_nlp("").ents == ()
    doc = trained_nlp("   \n\t ")
    assert len(doc) >= 1 and all(t.ent_iob_ == "O" for t in doc)
    docs = list(trained_nlp.pipe(["", "Barack Obama visited Paris last week .", "  "]))
    assert ents(docs[1]) == kit.TRAIN_DATA[0][1] and docs[0].ents == () and docs[2].ents == ()


def test_update_skips_empty_docs(trained_nlp, kit):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    examples = kit.make_examples(nlp) + [Example.from_dict(nlp.make_doc(""), {"entities": []})]
    optimizer = nlp.initialize(lambda: examples)
    losses = nlp.update(examples, sgd=optimizer)
    assert losses["bilstm_ner"] > 0
    assert nlp.update([examples[-1]], sgd=optimizer)["bilstm_ner"] == 0.0


def test_very_long_doc(trained_nlp):
    words = ("Barack Obama visited Paris last week .".split() * 3000)[:20_000]
    doc = trained_nlp(Doc(trained_nlp.vocab, words=words))
    assert len(doc) == 20_000
    assert len(doc.ents) > 1000
    assert all(e.label_ in {"PER", "LOC", "ORG"} for e in doc.ents)


def test_unseen_labels_and_unknown_words(trained_nlp, kit):
    # Gold with a label the model never saw: evaluation scores it as missed, updates ignore it.
    nlp = trained_nlp
    data = [("Quantum Zorblax visited Paris .", [(0, 15, "EVENT"), (24, 29, "LOC")])]
    examples = kit.make_examples(nlp, data)
    scores = nlp.evaluate(examples)
    assert scores["ents_per_type"]["EVENT"]["r"] == 0.0
    ner = nlp.get_pipe("bilstm_ner")
    gold = ner._gold_bio(examples[0])
    assert gold[:2] == [None, None] and gold[3] == "B-LOC"
    doc = nlp("Xyzzy Qwertyuiop zzzzzz Ünïcödé 12345 !!!")
    assert all(e.label_ in ner.labels for e in doc.ents)


def test_biluo_and_missing_gold(kit):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    ner.add_label("PER")
    doc = nlp.make_doc("John Smith and Mary went home")
    eg = Example.from_dict(doc, {"entities": ["B-PER", "L-PER", "-", "U-PER", "O", "O"]})
    assert ner._gold_bio(eg) == ["B-PER", "I-PER", None, "B-PER", "O", "O"]
    # Different tokenization on the predicted side takes the aligned (slow) path: same answer.
    predicted = Doc(nlp.vocab, words=["John", "Smith", "and", "Mary", "went", "home"])
    reference = Doc(nlp.vocab, words=["John", "Smith", "and", "Mary", "went", "ho", "me"],
                    spaces=[True, True, True, True, True, False, False],
                    ents=["B-PER", "I-PER", "", "B-PER", "O", "O", "O"])
    assert ner._gold_bio(Example(predicted, reference)) == ["B-PER", "I-PER", None, "B-PER", "O", "O"]
    assert ner._gold_bio(Example(reference.copy(), reference))[:4] == ["B-PER", "I-PER", None, "B-PER"]


def test_round_trips_give_identical_predictions(trained_nlp, tmp_path, kit):
    texts = [t for t, _ in kit.TRAIN_DATA] + ["Obama and Merkel visited Siemens in Paris ."]
    before = [ents(d) for d in trained_nlp.pipe(texts)]
    trained_nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert [ents(d) for d in loaded.pipe(texts)] == before
    assert loaded.get_pipe("bilstm_ner").labels == ("LOC", "ORG", "PER")

    fresh = spacy.blank("en")
    fresh.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    fresh.from_bytes(trained_nlp.to_bytes())
    assert [ents(d) for d in fresh.pipe(texts)] == before
    ner = trained_nlp.get_pipe("bilstm_ner")
    scores_a = ner.model.predict([trained_nlp.make_doc(texts[0])])[0]
    scores_b = fresh.get_pipe("bilstm_ner").model.predict([fresh.make_doc(texts[0])])[0]
    np.testing.assert_array_equal(scores_a, scores_b)


def test_pipe_with_two_processes(trained_nlp, kit):
    texts = [t for t, _ in kit.TRAIN_DATA] * 4
    expected = [ents(d) for d in trained_nlp.pipe(texts)]
    assert [ents(d) for d in trained_nlp.pipe(texts, n_process=2, batch_size=4)] == expected


def test_static_vectors_and_words_without_vectors(tmp_path, kit):
    vectors_dir = init_glove_vectors(tmp_path / "glove", limit=2000)
    nlp = spacy.load(vectors_dir)
    assert nlp.vocab.vectors.shape == (2000, 50)
    assert nlp.vocab["Paris"].has_vector and nlp.vocab["PARIS"].has_vector
    assert not nlp.vocab["Zorblaxian"].has_vector
    config = dict(kit.TINY_MODEL, include_static_vectors=True)
    nlp.add_pipe("bilstm_ner", config={"model": config})
    kit.train_tiny(nlp, kit.make_examples(nlp))
    for text, gold in kit.TRAIN_DATA:
        assert ents(nlp(text)) == gold
    doc = nlp("Zorblaxian Qwxyz visited Paris .")  # first two words are not in the table
    assert all(e.label_ in {"PER", "LOC", "ORG"} for e in doc.ents)


def test_viterbi_only_valid_bio():
    labels = ["A", "B", "C"]
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(n, 7)).astype("f") * 5 for n in rng.integers(0, 40, size=200)]
    # Push hard towards invalid paths: I- tags everywhere.
    logits += [np.tile(np.array([0, 0, 9, 0, 9, 0, 9], "f"), (n, 1)) for n in (1, 2, 17)]
    paths = viterbi(*softmax_as_crf(logits, len(labels)), max_cells=300)
    tags = ["O"] + [f"{p}-{label}" for label in labels for p in "BI"]
    for path, x in zip(paths, logits):
        assert len(path) == len(x)
        seq = [tags[i] for i in path]
        for prev, cur in zip(["O"] + seq, seq):
            if cur.startswith("I-"):
                assert prev in (f"B-{cur[2:]}", cur), seq


def test_viterbi_matches_brute_force():
    import itertools

    labels = ["X", "Y"]
    _, start, trans, end = softmax_as_crf([], len(labels))
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(size=(4, 5)).astype("f")
        logp = x - np.log(np.exp(x).sum(1, keepdims=True))
        best = max(
            itertools.product(range(5), repeat=4),
            key=lambda p: start[p[0]] + sum(logp[t, p[t]] for t in range(4)) + sum(trans[p[t - 1], p[t]] for t in range(1, 4)),
        )
        assert tuple(viterbi(*softmax_as_crf([x], len(labels)))[0]) == best


def test_initialize_with_labels_and_without_any(kit):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    examples = kit.make_examples(nlp)
    nlp.initialize(lambda: examples)
    assert ner.labels == ("LOC", "ORG", "PER")
    nlp2 = spacy.blank("en")
    ner2 = nlp2.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    ner2.initialize(lambda: examples, nlp=nlp2, labels=["PER", "MISC"])
    assert ner2.labels == ("PER", "MISC") and len(ner2.tags) == 5
    ner2.initialize(lambda: examples, nlp=nlp2, labels=["MISC", "PER"])  # same size: fine
    with pytest.raises(ValueError, match="already initialized for 5 tags"):
        ner2.initialize(lambda: examples, nlp=nlp2, labels=["A", "B", "C"])
    with pytest.raises(ValueError, match="after the model is initialized"):
        ner2.add_label("D")
    nlp3 = spacy.blank("en")
    nlp3.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    with pytest.raises(ValueError, match="no usable entity labels"):
        nlp3.initialize(lambda: kit.make_examples(nlp3, [("No entities here .", [])]))


@pytest.mark.parametrize(
    "override, setting",
    [
        ({"hidden_width": "wide"}, "hidden_width"),
        ({"embed_width": None}, "embed_width"),
        ({"depth": 0}, "depth"),
        ({"rows": [100]}, "rows"),
        ({"dropout_rate": 0.5}, "dropout_rate"),
    ],
)
def test_bad_model_setting_names_the_setting(override, setting, kit):
    nlp = spacy.blank("en")
    model = dict(kit.TINY_MODEL, **override)
    with pytest.raises(Exception, match=setting):
        nlp.add_pipe("bilstm_ner", config={"model": model})


def test_training_config_errors_name_the_setting(kit):
    from spacy.util import load_model_from_config

    def config_with(**model_settings) -> Config:
        config = Config().from_disk(REPO_CONFIG, interpolate=False)
        config["components"]["bilstm_ner"]["model"].update(model_settings)
        return config

    with pytest.raises(Exception, match="depth"):
        load_model_from_config(config_with(depth="two"), auto_fill=True)
    with pytest.raises(Exception, match="hiden_width"):  # a typo is an unexpected setting
        load_model_from_config(config_with(hiden_width=200), auto_fill=True)
    config = config_with()
    del config["components"]["bilstm_ner"]["factory"]
    with pytest.raises(Exception, match="factory"):
        load_model_from_config(config, auto_fill=True)
    # Static vectors asked for, but no [initialize] vectors given.
    config = config_with()
    config["components"]["bilstm_ner"]["model"]["features"]["include_static_vectors"] = True
    nlp = load_model_from_config(config, auto_fill=True)
    with pytest.raises(ValueError, match=r"include_static_vectors.*\[initialize\] vectors"):
        nlp.initialize(lambda: kit.make_examples(nlp))


def test_factory_found_through_entry_point_without_import():
    code = (
        "import sys, spacy\n"
        "nlp = spacy.blank('en')\n"
        "ner = nlp.add_pipe('bilstm_ner')\n"
        "print(type(ner).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "spacy_el.ner.pipe"


@pytest.mark.parametrize("feature_dropout", [None, 0.0, 0.1])
def test_feature_dropout_keeps_training_dropout_out_of_the_features(feature_dropout, kit):
    """[training] dropout reaches every layer with a rate (spaCy's way) unless `feature_dropout`
    fixes the rate inside the features; the Dropout around the BiLSTM always follows training."""
    features = dict(kit.TINY_V2["features"], gazetteers=[])
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=features,
                                                            feature_dropout=feature_dropout)})
    examples = kit.make_examples(nlp)
    nlp.initialize(lambda: examples)
    nlp.update(examples, drop=0.5)
    inside = [n.attrs["dropout_rate"] for n in ner.model.get_ref("features").walk() if "dropout_rate" in n.attrs]
    around = [n.attrs["dropout_rate"] for n in ner.model.layers if n.name == "dropout"]
    assert inside and len(around) == 2
    assert inside == [0.5 if feature_dropout is None else feature_dropout] * len(inside)
    assert around == [0.5, 0.5]


def test_bad_feature_dropout_names_the_setting(kit):
    nlp = spacy.blank("en")
    with pytest.raises(Exception, match="feature_dropout"):
        nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, feature_dropout=1.5)})


def test_word_dropout_zeroes_whole_tokens_in_training_only(kit):
    from thinc.api import NumpyOps

    from spacy_el.ner.features import WordDropout

    layer = WordDropout(0.5)
    X = NumpyOps().asarray2f(np.ones((2000, 4), dtype="f"))
    assert layer.predict([X])[0] is X
    (Y,), backprop = layer.begin_update([X])
    rows = Y.sum(axis=1)
    assert set(np.unique(rows).tolist()) == {0.0, 8.0}  # whole rows dropped, the rest scaled by 2
    assert 0.4 < (rows == 0).mean() < 0.6
    (dX,) = backprop([X])
    assert (dX == Y).all()  # the gradient flows through the kept tokens only
    with pytest.raises(Exception, match="word_dropout"):
        features = dict(kit.TINY_V2["features"], word_dropout=1.0)
        spacy.blank("en").add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=features)})


def test_unannotated_labels_make_o_tokens_o_or_those_labels(kit):
    """A doc that declares Chemical unannotated: its O tokens admit O, B-Chemical and I-Chemical
    in the CRF's gold constraint (a strictly larger set, so a smaller loss), and the softmax
    tagger learns nothing from them."""
    from spacy_el.ner.convert import UNANNOTATED_KEY
    from spacy_el.ner.crf import crf_loss

    model = {**kit.TINY_V2, "features": {**kit.TINY_V2["features"], "gazetteers": []}}
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("bilstm_ner", config={"model": model})
    text, ents = "aspirin caused asthma .", [(15, 21, "Disease")]
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": ents})]
    ner.initialize(lambda: examples, nlp=nlp, labels=["Chemical", "Disease"])
    loose = Example.from_dict(nlp.make_doc(text), {"entities": ents})
    loose.reference.user_data[UNANNOTATED_KEY] = ["Chemical", "Gene"]  # a label the tagger lacks is ignored
    scores = ner.model.predict([examples[0].predicted])
    plain_loss, plain_d = ner.get_loss(examples, scores)
    loose_loss, loose_d = ner.get_loss([loose], scores)
    assert loose_loss < plain_loss
    b_chem = ner.tags.index("B-Chemical")
    assert loose_d[0][0, b_chem] < plain_d[0][0, b_chem]  # "aspirin" is not pushed away from Chemical as hard
    allowed = np.zeros((4, len(ner.tags)), dtype=bool)
    allowed[:, [0, b_chem, b_chem + 1]] = True  # O, B-Chemical, I-Chemical everywhere but on "asthma"
    allowed[2] = False
    allowed[2, ner.tags.index("B-Disease")] = True
    expected = crf_loss([np.asarray(scores[0])], [allowed], *ner.crf_scores())[0]
    assert loose_loss == pytest.approx(expected, rel=1e-5)

    softmax = spacy.blank("en")
    tagger = softmax.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    tagger.initialize(lambda: examples, nlp=softmax, labels=["Chemical", "Disease"])
    only_o = Example.from_dict(softmax.make_doc("the weather was mild ."), {"entities": []})
    only_o.reference.user_data[UNANNOTATED_KEY] = ["Chemical"]
    assert tagger.get_loss([only_o], tagger.model.predict([only_o.predicted]))[0] == 0.0


@pytest.mark.parametrize("crf", [True, False])
def test_alternatives_are_the_likely_spans_the_best_path_left_out(crf, trained_nlp, kit):
    """With `alternatives_key`, the spans other than the entities that the tagger's CRF (a softmax
    tagger's: its log-probabilities under the BIO constraints) gives probability >= the minimum go
    to `doc.spans`, most probable first, their probabilities in `attrs["scores"]`; they survive
    `Doc.to_bytes` and `n_process=2`. Without the key nothing is written."""
    from spacy.tokens import Doc as SpacyDoc

    from spacy_el.ner.crf import span_probabilities

    texts = ["Obama and Merkel visited Siemens in Paris .", "Fans of Apple in Berlin met John Smith .", ""]
    model = {**kit.TINY_V2, "features": {**kit.TINY_V2["features"], "gazetteers": []}} if crf else kit.TINY_MODEL
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": model, "alternatives_key": "ner_alternatives",
                                       "alternatives_min_prob": 0.01})
    if crf:
        kit.train_tiny(nlp, kit.make_examples(nlp), n_iter=15)  # under-trained: some spans stay uncertain
    else:
        nlp.from_bytes(trained_nlp.to_bytes())
    ner = nlp.get_pipe("bilstm_ner")
    docs = list(nlp.pipe(texts))
    logits = ner.emissions([nlp.make_doc(t) for t in texts])
    if crf:
        want = span_probabilities(logits, *ner.crf_scores(), min_prob=0.01)
    else:
        want = span_probabilities(*softmax_as_crf(logits, len(ner.labels)), min_prob=0.01)
    n_alternatives = 0
    for doc, spans in zip(docs, want):
        group = doc.spans["ner_alternatives"]
        chosen = {(e.start, e.end, e.label_) for e in doc.ents}
        expected = {(s, e, ner.labels[k]): p for s, e, k, p in spans if (s, e, ner.labels[k]) not in chosen}
        assert {(s.start, s.end, s.label_) for s in group} == set(expected)
        scores = group.attrs["scores"]
        assert scores == sorted(scores, reverse=True) and all(0.01 <= p <= 1.0 for p in scores)
        assert [pytest.approx(expected[(s.start, s.end, s.label_)]) for s in group] == scores
        n_alternatives += len(group)
        again = SpacyDoc(nlp.vocab).from_bytes(doc.to_bytes())
        assert [(s.start, s.end, s.label_) for s in again.spans["ner_alternatives"]] == \
            [(s.start, s.end, s.label_) for s in group]
        assert again.spans["ner_alternatives"].attrs["scores"] == scores
    assert n_alternatives > 0
    two = list(nlp.pipe(texts * 2, n_process=2, batch_size=2))
    assert [[(s.start, s.end, s.label_) for s in d.spans["ner_alternatives"]] for d in two] == \
        [[(s.start, s.end, s.label_) for s in d.spans["ner_alternatives"]] for d in docs * 2]
    assert "ner_alternatives" not in trained_nlp(texts[0]).spans


def test_bad_alternatives_min_prob_names_the_setting(kit):
    with pytest.raises(ValueError, match=r"\[components.bilstm_ner\] alternatives_min_prob"):
        spacy.blank("en").add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL, "alternatives_min_prob": 0})
