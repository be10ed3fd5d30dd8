import json

import numpy as np
import pytest
import torch

from spacy_el.io import InputError
from spacy_el.kb.readers import read_kb
from spacy_el.sap.distill import (STATS_FILE, TEACHER_FILE, DistillLoss, distill, distillation_texts, student_of,
                                  teacher_vectors)
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.train import ENCODER

from .test_finetune import MEAN, data  # noqa: F401  (data: the tiny KB and corpora fixture)


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT with strong random layers: a freshly initialised one (std 0.02) barely moves
    its embeddings, so a 0-layer student would match it before any training."""
    encoder = SapEncoder.load(tiny_bert_dir, **MEAN)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in encoder.model.encoder.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("teacher")
    encoder.save(out)
    return out


@pytest.mark.parametrize("layers", [0, 1])
def test_student_keeps_the_teachers_first_layers(tiny_bert_dir, layers, tmp_path):
    teacher = SapEncoder.load(tiny_bert_dir, **MEAN)
    student = student_of(teacher, layers)
    assert len(student.model.encoder.layer) == student.model.config.num_hidden_layers == layers
    assert len(teacher.model.encoder.layer) == 2  # the teacher is untouched
    same = student.model.embeddings.word_embeddings.weight
    assert torch.equal(same, teacher.model.embeddings.word_embeddings.weight) and same is not \
        teacher.model.embeddings.word_embeddings.weight
    student.save(tmp_path / "s")
    loaded = SapEncoder.load(tmp_path / "s")
    assert loaded.model.config.num_hidden_layers == layers and loaded.settings.pooling == "mean"
    vectors = loaded.embed(["cystic fibrosis", "breast cancer"])
    assert vectors.shape == (2, teacher.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors, student.embed(["cystic fibrosis", "breast cancer"]), atol=1e-6)


def test_too_many_layers_is_a_clear_error(tiny_bert_dir):
    with pytest.raises(InputError, match="layers=3: the teacher has 2 transformer layers"):
        student_of(SapEncoder.load(tiny_bert_dir), 3)


def test_texts_are_kb_names_then_corpus_mentions(data):
    kb = read_kb(data["kb"], "tsv")
    texts = distillation_texts(kb, [data["train"]])
    assert texts[:len(kb)] == list(dict.fromkeys(kb.names))
    assert "mammary tumour" in texts and "some symptom" not in texts  # NIL mentions are not linked
    assert len(texts) == len(set(texts))


def _loss(encoder, texts, targets):
    encoder.model.eval()
    with torch.no_grad():
        return float(DistillLoss(texts, targets)(encoder, range(len(texts))))


def test_distill_brings_the_student_towards_the_teacher(teacher_dir, data, tmp_path):
    teacher = SapEncoder.load(teacher_dir)
    texts = distillation_texts(read_kb(data["kb"], "tsv"), [data["train"]])
    targets = teacher.embed(texts)
    start = _loss(student_of(teacher, 0), texts, targets)
    result = distill(teacher_dir, data["kb"], tmp_path / "run", layers=0, kb_format="tsv", corpora=[data["train"]],
                     config=TrainConfig(epochs=6, lr=1e-2, checkpoint_every=0), batch_size=8, show_progress=False)
    assert result.n_texts == len(texts) and result.train.steps == 6 * -(-len(texts) // 8)
    student = SapEncoder.load(result.encoder_dir)
    assert student.model.config.num_hidden_layers == 0
    assert _loss(student, texts, targets) < 0.5 * start
    saved = json.loads((tmp_path / "run" / STATS_FILE).read_text())
    assert saved["layers"] == 0 and saved["n_texts"] == len(texts) and saved["steps"] == result.train.steps


def test_teacher_vectors_are_cached_and_keyed(tiny_bert_dir, tmp_path, monkeypatch):
    teacher = SapEncoder.load(tiny_bert_dir, **MEAN)
    first = teacher_vectors(teacher, ["a", "b"], tmp_path, show_progress=False)
    assert (tmp_path / TEACHER_FILE).exists()
    monkeypatch.setattr(SapEncoder, "embed", lambda *a, **k: pytest.fail("recomputed"))
    assert np.array_equal(teacher_vectors(teacher, ["a", "b"], tmp_path, show_progress=False), first)
    monkeypatch.undo()
    assert teacher_vectors(teacher, ["a", "c"], tmp_path, show_progress=False).shape == (2, teacher.dim)


def _run(tiny_bert_dir, data, out, resume=False):
    return distill(tiny_bert_dir, data["kb"], out, layers=1, kb_format="tsv", batch_size=8,
                   config=TrainConfig(epochs=2, lr=1e-3, seed=3, checkpoint_every=2), resume=resume,
                   show_progress=False, encoder_options=MEAN)


def test_resume_equals_uninterrupted_run(tiny_bert_dir, data, tmp_path, interrupt_at_call):
    straight = _run(tiny_bert_dir, data, tmp_path / "straight")
    with interrupt_at_call(DistillLoss, 4):  # steps 1-3 ran, the last checkpoint at step 2
        _run(tiny_bert_dir, data, tmp_path / "resumed")
    resumed = _run(tiny_bert_dir, data, tmp_path / "resumed", resume=True)
    assert resumed.train.steps == straight.train.steps == 4
    assert resumed.train.losses == straight.train.losses
    assert SapEncoder.load(resumed.encoder_dir).fingerprint == SapEncoder.load(straight.encoder_dir).fingerprint


def test_dev_scores_teacher_student_and_epochs(tiny_bert_dir, data, tmp_path):
    result = distill(tiny_bert_dir, data["kb"], tmp_path / "run", layers=0, kb_format="tsv", dev_pubtator=data["dev"],
                     config=TrainConfig(epochs=2, lr=1e-2, checkpoint_every=0), batch_size=8, show_progress=False,
                     encoder_options=MEAN)
    assert 0 <= result.teacher_score <= 100 and 0 <= result.start_score <= 100
    assert len(result.train.scores) == 2


def test_cli(tiny_bert_dir, data, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    teacher = tmp_path / "teacher"
    SapEncoder.load(tiny_bert_dir, **MEAN).save(teacher)
    args = ["distill", str(teacher), str(data["kb"]), str(tmp_path / "run"), "--format", "tsv", "--layers", "0",
            "--corpus", str(data["train"]), "--dev", str(data["dev"]), "--epochs", "1", "--batch-size", "8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Distilled a 0-layer student" in result.output and "Dev Acc@1: teacher" in result.output
    assert (tmp_path / "run" / ENCODER / "sap_encoder.json").exists()
    bad = CliRunner().invoke(app, args[:2] + [str(tmp_path / "missing.tsv")] + args[3:])
    assert bad.exit_code == 1 and "missing.tsv" in bad.output and "Traceback" not in bad.output
    deep = CliRunner().invoke(app, args[:7] + ["5"] + args[8:])
    assert deep.exit_code == 1 and "layers=5" in deep.output
