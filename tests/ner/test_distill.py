"""Distillation: a teacher tagger's CRF targets written into a DocBin, and a student that learns them."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.api import Adam

from spacy_el.io import InputError
from spacy_el.ner.distill import TEACHER_KEY, write_teacher_targets


@pytest.fixture(scope="module")
def teacher(kit, tmp_path_factory):
    """A tiny CRF tagger trained on the sample sentences, saved as a pipeline."""
    features = dict(kit.TINY_V2["features"], gazetteers=[])
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=features)})
    kit.train_tiny(nlp, kit.make_examples(nlp), n_iter=40)
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    nlp.to_disk(path)
    return nlp, path


@pytest.fixture(scope="module")
def unlabelled(kit, tmp_path_factory):
    """The sample sentences with gold that says "no entity" everywhere, and an empty doc."""
    nlp = spacy.blank("en")
    docs = [Example.from_dict(nlp.make_doc(text), {"entities": []}).reference for text, _ in kit.TRAIN_DATA]
    docs.append(nlp.make_doc(""))
    path = tmp_path_factory.mktemp("docs") / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.fixture(scope="module")
def distilled(teacher, unlabelled, tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "sub" / "train_teacher.spacy"
    assert write_teacher_targets(teacher[1], unlabelled, path) == len(DocBin().from_disk(unlabelled))
    assert not path.with_name(path.name + ".partial").exists()
    return path


def _student(kit, teacher_nlp, distilled_path, weight: float, n_iter: int = 60):
    """A student of the teacher's labels trained on the distilled docs at `weight`."""
    features = dict(kit.TINY_V2["features"], gazetteers=[])
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=features), "teacher_weight": weight})
    examples = [Example(nlp.make_doc(doc.text), doc)
                for doc in DocBin().from_disk(distilled_path).get_docs(nlp.vocab)]
    fix_random_seed(0)
    nlp.get_pipe("bilstm_ner").initialize(lambda: examples, nlp=nlp, labels=teacher_nlp.get_pipe("bilstm_ner").labels)
    optimizer = Adam(0.01)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp


def _ents(nlp, texts):
    return [[(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


def test_targets_are_the_teachers_distribution_per_token(teacher, distilled):
    nlp, _ = teacher
    docs = list(DocBin().from_disk(distilled).get_docs(nlp.vocab))
    tags = nlp.get_pipe("bilstm_ner").tags
    for doc in docs:
        targets = doc.user_data[TEACHER_KEY]
        assert list(targets["tags"]) == tags
        assert targets["marginals"].shape == (len(doc), len(tags))
        assert targets["transitions"].shape == (len(tags), len(tags))
        assert np.allclose(targets["marginals"].sum(axis=1), 1.0, atol=1e-4)
        assert not doc.ents  # the gold is the DocBin's own, untouched
    # where the teacher is sure, its marginals peak on the tags it decodes
    predicted = nlp(docs[0].text)
    best = [tags[i] for i in docs[0].user_data[TEACHER_KEY]["marginals"].argmax(axis=1)]
    assert [t.ent_iob_ + ("-" + t.ent_type_ if t.ent_type_ else "") for t in predicted] == best


def test_a_student_learns_the_teacher_where_the_gold_is_silent(kit, teacher, distilled):
    texts = [text for text, _ in kit.TRAIN_DATA]
    wanted = _ents(teacher[0], texts)
    assert any(wanted)
    assert _ents(_student(kit, teacher[0], distilled, weight=1.0), texts) == wanted
    assert not any(_ents(_student(kit, teacher[0], distilled, weight=0.0), texts))  # the gold alone: no entities


def test_unannotated_docs_are_learnt_from_the_teacher_alone(kit, teacher, tmp_path):
    """Raw text (entity annotation missing, not "O") constrains nothing in the gold part of the loss."""
    nlp = spacy.blank("en")
    raw = tmp_path / "raw.spacy"
    DocBin(docs=[nlp.make_doc(text) for text, _ in kit.TRAIN_DATA]).to_disk(raw)
    write_teacher_targets(teacher[1], raw, tmp_path / "raw_taught.spacy")
    texts = [text for text, _ in kit.TRAIN_DATA]
    student = _student(kit, teacher[0], tmp_path / "raw_taught.spacy", weight=0.5)
    assert _ents(student, texts) == _ents(teacher[0], texts)


def test_other_labels_and_bad_settings_are_named(kit, teacher, distilled, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=dict(kit.TINY_V2["features"], gazetteers=[]))})
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in DocBin().from_disk(distilled).get_docs(nlp.vocab)]
    nlp.get_pipe("bilstm_ner").initialize(lambda: examples, nlp=nlp, labels=["DISEASE"])
    with pytest.raises(ValueError, match="teacher-targets"):
        nlp.update(examples[:1], sgd=Adam(0.01))
    mixed = [Example(eg.predicted, eg.reference.copy()) for eg in examples[:2]]
    mixed[1].reference.user_data[TEACHER_KEY] = dict(mixed[1].reference.user_data[TEACHER_KEY], temperature=2.0)
    student = _student(kit, teacher[0], distilled, weight=0.5, n_iter=1)
    with pytest.raises(ValueError, match="several temperatures"):
        student.update([Example(student.make_doc(eg.reference.text), eg.reference) for eg in mixed], sgd=Adam(0.01))
    with pytest.raises(ValueError, match="teacher_weight"):
        spacy.blank("en").add_pipe("bilstm_ner", config={"teacher_weight": 1.5})
    with pytest.raises(InputError, match="no config.cfg"):
        write_teacher_targets(tmp_path, distilled, tmp_path / "x.spacy")
    with pytest.raises(InputError, match="no such DocBin"):
        write_teacher_targets(teacher[1], tmp_path / "missing.spacy", tmp_path / "x.spacy")


def test_cli_writes_targets_softened_by_a_temperature(teacher, unlabelled, distilled, tmp_path):
    out = subprocess.run([sys.executable, "-m", "spacy_el", "teacher-targets", str(teacher[1]), str(unlabelled),
                          str(tmp_path / "t.spacy"), "--temperature", "3"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    vocab = teacher[0].vocab
    soft = [d.user_data[TEACHER_KEY] for d in DocBin().from_disk(tmp_path / "t.spacy").get_docs(vocab)]
    sharp = [d.user_data[TEACHER_KEY] for d in DocBin().from_disk(distilled).get_docs(vocab)]
    assert soft[0]["temperature"] == 3.0 and sharp[0]["temperature"] == 1.0
    assert np.mean([t["marginals"].max(axis=1).mean() for t in soft[:-1]]) < np.mean(
        [t["marginals"].max(axis=1).mean() for t in sharp[:-1]])
    bad = subprocess.run([sys.executable, "-m", "spacy_el", "teacher-targets", str(tmp_path), str(unlabelled),
                          str(tmp_path / "u.spacy")], capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "no config.cfg" in bad.stderr + bad.stdout
