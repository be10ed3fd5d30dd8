"""kb_gazetteer: marks exactly the KB names of a doc, feeds bilstm_ner's KB-name flags, round-trips
with the pipeline, and a missing or empty KB is an error naming the setting."""
from __future__ import annotations

import numpy as np
import pytest
import spacy
from spacy.training import Example

from spacy_el.ner.features import SpanFlags

KB_ROWS = [
    ("MESH:D011125", "Familial adenomatous polyposis"),
    ("MESH:D011125", "adenomatous polyposis coli"),
    ("MESH:D001943", "Breast Cancer"),
    ("MESH:D009369", "cancer"),
    ("MESH:X", "x"),  # shorter than min_length: left out
]
TEXT = "Familial adenomatous polyposis and breast cancer, not cancerous x."

TRAIN = [
    ("Familial adenomatous polyposis is inherited .", [(0, 30, "Disease")]),
    ("Patients with breast cancer were enrolled .", [(14, 27, "Disease")]),
    ("The cancer grew slowly in two patients .", [(4, 10, "Disease")]),
    ("Adenomatous polyposis coli was seen in the family .", [(0, 26, "Disease")]),
    ("No treatment was given .", []),
]


@pytest.fixture
def kb_file(tmp_path):
    path = tmp_path / "kb.tsv"
    path.write_text("".join(f"{cid}\t{name}\n" for cid, name in KB_ROWS))
    return path


def gazetteer_pipeline(kb_file, ner_model=None):
    nlp = spacy.blank("en")
    nlp.add_pipe("kb_gazetteer", config={"label": "Disease"})
    if ner_model is not None:
        nlp.add_pipe("bilstm_ner", config={"model": ner_model})
    return nlp


def spans(doc, key="kb_names"):
    return [(s.start, s.end, s.text, s.label_) for s in doc.spans[key]]


def test_marks_exactly_the_kb_names(kb_file):
    nlp = gazetteer_pipeline(kb_file)
    nlp.get_pipe("kb_gazetteer").initialize(kb=str(kb_file), kb_format="tsv")
    doc = nlp(TEXT)
    assert spans(doc) == [(0, 3, "Familial adenomatous polyposis", "Disease"),
                          (4, 6, "breast cancer", "Disease"), (5, 6, "cancer", "Disease")]
    flags = SpanFlags(["kb_names"]).predict([doc])[0]
    assert flags[:, 0].nonzero()[0].tolist() == [0, 4, 5]  # B: a name starts here
    assert flags[:, 1].nonzero()[0].tolist() == [1, 2, 5]  # I: inside a name
    assert spans(nlp("")) == [] and spans(nlp("No names here.")) == []


def test_missing_or_empty_kb_is_a_clear_error(tmp_path, kb_file):
    nlp = gazetteer_pipeline(kb_file)
    gaz = nlp.get_pipe("kb_gazetteer")
    with pytest.raises(ValueError, match=r"\[initialize.components.kb_gazetteer\] kb"):
        gaz.initialize()
    with pytest.raises(ValueError, match=r"nope.tsv.*\[initialize.components.kb_gazetteer\] kb.*does not exist"):
        gaz.initialize(kb=str(tmp_path / "nope.tsv"))
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match="kb_gazetteer"):
        gaz.initialize(kb=str(empty), kb_format="tsv")


def test_ner_without_the_gazetteer_component_says_how_to_fix(kit):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": kit.TINY_V2})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]
    with pytest.raises(ValueError, match="kb_gazetteer.*annotating_components"):
        nlp.initialize(lambda: examples)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kit):
    from spacy.util import fix_random_seed
    from thinc.api import Adam

    tmp = tmp_path_factory.mktemp("gaz")
    kb = tmp / "kb.tsv"
    kb.write_text("".join(f"{cid}\t{name}\n" for cid, name in KB_ROWS))
    nlp = gazetteer_pipeline(kb, ner_model=kit.TINY_V2)
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]
    fix_random_seed(0)
    nlp.config["initialize"]["components"] = {"kb_gazetteer": {"kb": str(kb), "kb_format": "tsv"}}
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    for _ in range(60):
        # as `spacy train` with annotating_components = ["kb_gazetteer"]
        nlp.update(examples, sgd=optimizer, drop=0.0, annotates=["kb_gazetteer"])
    return nlp


def ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def test_crf_tagger_with_gazetteer_learns_and_round_trips(trained, tmp_path):
    assert trained.get_pipe("bilstm_ner").has_crf
    for text, gold in TRAIN:
        assert ents(trained(text)) == gold
    trained.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("kb_gazetteer").names == trained.get_pipe("kb_gazetteer").names
    from_bytes = spacy.blank("en")
    for name in trained.pipe_names:
        config = {k: v for k, v in trained.config["components"][name].items() if k != "factory"}
        from_bytes.add_pipe(name, config=config)
    from_bytes.from_bytes(trained.to_bytes())
    docs = [TEXT, "", "Adenomatous polyposis coli and cancer."]
    expected = [(ents(d), spans(d)) for d in trained.pipe(docs)]
    for other in (loaded, from_bytes):
        assert [(ents(d), spans(d)) for d in other.pipe(docs)] == expected
    ner = trained.get_pipe("bilstm_ner")
    emissions = ner.model.predict([trained(TEXT)])[0]
    assert np.allclose(loaded.get_pipe("bilstm_ner").model.predict([loaded(TEXT)])[0], emissions)


def test_n_process_2_gives_the_same_entities_and_names(trained):
    texts = [TEXT, "", "Adenomatous polyposis coli and cancer.", "No names here at all."] * 2
    expected = [(ents(d), spans(d)) for d in trained.pipe(texts)]
    assert [(ents(d), spans(d)) for d in trained.pipe(texts, n_process=2, batch_size=2)] == expected


def test_train_mentions_gazetteer_is_k_fold_on_training_docs_and_whole_elsewhere(tmp_path):
    nlp = spacy.blank("en")
    gaz = nlp.add_pipe("kb_gazetteer", name="train_gazetteer", config={"spans_key": "train_names"})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]
    gaz.initialize(lambda: examples, train_folds=3)
    assert sorted(gaz.names) == ["adenomatous polyposis coli", "breast cancer", "cancer",
                                 "familial adenomatous polyposis"]

    def marked(text):
        doc = nlp(text)
        return sorted(s.text.lower() for s in doc.spans["train_names"])

    from spacy_el.ner.gazetteer import _text_key

    folds = {t: gaz.doc_folds[_text_key(t)] for t, _ in TRAIN}
    assert len(set(gaz.doc_folds.values())) > 1  # the five texts are spread over the folds
    for text, gold in TRAIN:
        own = [text[s:e].lower() for s, e, _ in gold]
        for name in own:  # a training doc's own mention is marked only when another fold has it too
            seen_elsewhere = any(name in t.lower() and folds[t] != folds[text] and
                                 any(t[s:e].lower() == name for s, e, _ in g) for t, g in TRAIN)
            assert (name in marked(text)) == seen_elsewhere
    # any other text: every train mention is a name
    assert marked("Breast cancer and familial adenomatous polyposis; cancer.") == \
        ["breast cancer", "cancer", "cancer", "familial adenomatous polyposis"]
    # saved with the pipeline, folds included (disk and bytes)
    nlp.to_disk(tmp_path / "p")
    other = spacy.blank("en")
    other.add_pipe("kb_gazetteer", name="train_gazetteer", config={"spans_key": "train_names"})
    for loaded in (spacy.load(tmp_path / "p"), other.from_bytes(nlp.to_bytes())):
        for text, _ in TRAIN + [("Breast cancer and cancer.", [])]:
            a, b = loaded(text), nlp(text)
            assert [s.text for s in a.spans["train_names"]] == [s.text for s in b.spans["train_names"]]
    with pytest.raises(ValueError, match="train_folds=1"):
        gaz.initialize(lambda: examples, train_folds=1)
    with pytest.raises(ValueError, match="not both"):
        gaz.initialize(lambda: examples, kb="kb.tsv", train_folds=3)
