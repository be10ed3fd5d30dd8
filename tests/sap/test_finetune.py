import json

import pytest
import torch

from spacy_el.corpora.pubtator import read_pubtator
from spacy_el.io import InputError
from spacy_el.kb.readers import read_kb
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.finetune import (STATS_FILE, KBVectors, dev_accuracy, finetune, hard_negative_batches,
                                   mention_examples)
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.train import ENCODER, PairLoss

#: A random tiny BERT trains far faster with mean pooling than with its untrained [CLS].
MEAN = {"pooling": "mean"}

# A tiny KB: 8 diseases with synonyms; one concept has a MeSH and an OMIM id (MEDIC style).
KB = [
    ("MESH:D000001", ["cystic fibrosis", "mucoviscidosis"]),
    ("MESH:D000002", ["breast cancer", "mammary carcinoma"]),
    ("MESH:D000003", ["ovarian cancer", "ovary neoplasm"]),
    ("MESH:D000004", ["colorectal cancer", "bowel carcinoma"]),
    ("MESH:D000005", ["huntington disease", "huntington chorea"]),
    ("MESH:C000006|OMIM:100006", ["ataxia telangiectasia", "louis bar syndrome"]),
    ("MESH:D000007", ["myotonic dystrophy", "steinert disease"]),
    ("MESH:D000008", ["hemophilia a", "factor viii deficiency"]),
]
# Train mentions: (text, id field as a PubTator file writes it).
TRAIN = [
    ("CF", "D000001"), ("fibrosis of the pancreas", "D000001"), ("mammary tumour", "D000002"),
    ("breast tumors", "D000002"), ("ovarian tumours", "D000003"), ("cancer of the ovary", "D000003"),
    ("colon cancer", "D000004"), ("bowel tumour", "D000004"), ("HD", "D000005"),
    ("huntingtons", "D000005"), ("AT", "OMIM:100006"), ("louis-bar", "MESH:C000006"),
    ("DM", "D000007"), ("steinert myotonia", "D000007"), ("haemophilia", "D000008"),
    ("FVIII deficiency", "D000008"),
    ("rare unknown syndrome", "D999999"),  # not in the KB
    ("breast and ovarian cancer", "D000002|D000003"),  # composite without part texts
    ("some symptom", "-1"),  # NIL
]
DEV = [("mammary tumours", "D000002"), ("colon carcinoma", "D000004"), ("louis bar", "OMIM:100006"),
       ("haemophilia a", "D000008"), ("ovary tumour", "D000003"), ("CF disease", "D000001")]


def write_pubtator(path, mentions, per_doc=4):
    lines = []
    for d in range(0, len(mentions), per_doc):
        pmid, title = str(1000 + d), f"Document {d}"
        chunk = mentions[d:d + per_doc]
        abstract, spans = "", []
        for text, ids in chunk:
            abstract += "We saw "
            start = len(title) + 1 + len(abstract)
            abstract += text + ". "
            spans.append(f"{pmid}\t{start}\t{start + len(text)}\t{text}\tDisease\t{ids}")
        lines += [f"{pmid}|t|{title}", f"{pmid}|a|{abstract.strip()}", *spans, ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path):
    kb = tmp_path / "kb.tsv"
    kb.write_text("".join(f"{cid}\t{name}\n" for cid, names in KB for name in names), encoding="utf-8")
    return {"kb": kb, "train": write_pubtator(tmp_path / "train.txt", TRAIN),
            "dev": write_pubtator(tmp_path / "dev.txt", DEV)}


def test_mentions_map_to_kb_concepts_and_absent_ids_are_counted(data):
    examples, stats = mention_examples(read_pubtator(data["train"]), read_kb(data["kb"], "tsv"))
    assert stats.n_nil == 1
    assert stats.n_missing_from_kb == 1 and stats.missing_ids == ["MESH:D999999"]
    assert stats.n_multi_concept == 1  # the composite names two concepts: no single positive
    assert stats.n_examples == len(examples) == 16
    # any prefix spelling and either id of a two-id concept reach the KB's spelling
    assert ("AT", "MESH:C000006|OMIM:100006") in examples
    assert ("louis-bar", "MESH:C000006|OMIM:100006") in examples
    assert ("CF", "MESH:D000001") in examples


def test_batches_pair_mentions_with_gold_names_and_wrong_concepts(tiny_bert_dir, data):
    kb = read_kb(data["kb"], "tsv")
    examples, _ = mention_examples(read_pubtator(data["train"]), kb)
    encoder = SapEncoder.load(tiny_bert_dir, pooling="mean")
    batches = hard_negative_batches(examples, KBVectors(kb), batch_size=5, n_negatives=3)(0, encoder)
    flat = [ex for batch in batches for ex in batch]
    assert [len(b) for b in batches] == [5, 5, 5, 1]
    names = {cid: names for cid, names in KB}
    for ex in flat:
        assert ex.text_b in names[ex.label]
        assert len(ex.negatives) == 3
        assert all(cid != ex.label and name in names[cid] for cid, name in ex.negatives)
    # the positive is the gold name nearest to the mention under the current weights
    ex = flat[0]
    vec_a, *vec_names = encoder.embed([ex.text_a, *names[ex.label]])
    assert ex.text_b == names[ex.label][max(range(len(vec_names)), key=lambda i: float(vec_names[i] @ vec_a))]


def _loss(encoder, batch):
    encoder.model.eval()
    with torch.no_grad():
        return float(PairLoss(TrainConfig())(encoder, batch))


def test_finetune_lowers_the_loss(tiny_bert_dir, data, tmp_path):
    kb = read_kb(data["kb"], "tsv")
    examples, _ = mention_examples(read_pubtator(data["train"]), kb)
    start = SapEncoder.load(tiny_bert_dir, pooling="mean")
    fixed = [ex for b in hard_negative_batches(examples, KBVectors(kb), 64, 3)(0, start) for ex in b]
    result = finetune(data["train"], data["kb"], tiny_bert_dir, tmp_path / "run", kb_format="tsv",
                      config=TrainConfig(epochs=4, lr=5e-3, checkpoint_every=0), batch_size=8, n_negatives=3,
                      show_progress=False,
                      encoder_options=MEAN)
    assert result.train.steps == 8
    assert result.stats.n_missing_from_kb == 1
    assert _loss(SapEncoder.load(result.encoder_dir), fixed) < 0.5 * _loss(start, fixed)
    saved = json.loads((tmp_path / "run" / STATS_FILE).read_text())
    assert saved["mentions"]["n_missing_from_kb"] == 1 and saved["steps"] == 8


def _run(tiny_bert_dir, data, out, resume=False):
    return finetune(data["train"], data["kb"], tiny_bert_dir, out, kb_format="tsv",
                    config=TrainConfig(epochs=2, lr=1e-3, seed=3, checkpoint_every=2), batch_size=6, n_negatives=2,
                    resume=resume,
                    show_progress=False, encoder_options=MEAN)


def test_resume_equals_uninterrupted_run(tiny_bert_dir, data, tmp_path, interrupt_at_call):
    straight = _run(tiny_bert_dir, data, tmp_path / "straight")
    with interrupt_at_call(PairLoss, 5):  # steps 1-4 ran (epoch 1 is 3 steps), last checkpoint at step 4
        _run(tiny_bert_dir, data, tmp_path / "resumed")
    resumed = _run(tiny_bert_dir, data, tmp_path / "resumed", resume=True)
    assert resumed.train.steps == straight.train.steps == 6
    assert resumed.train.losses == straight.train.losses
    assert SapEncoder.load(resumed.encoder_dir).fingerprint == SapEncoder.load(straight.encoder_dir).fingerprint


def test_dev_early_stopping_keeps_the_best_encoder(tiny_bert_dir, data, tmp_path):
    result = finetune(data["train"], data["kb"], tiny_bert_dir, tmp_path / "run", kb_format="tsv",
                      dev_pubtator=data["dev"], config=TrainConfig(epochs=4, lr=2e-2, patience=2, checkpoint_every=0),
                      batch_size=8, n_negatives=3, show_progress=False, encoder_options=MEAN)
    scores = [result.start_score, *result.train.scores]
    assert 1 <= len(result.train.scores) <= 4
    kb = read_kb(data["kb"], "tsv")
    kept = dev_accuracy(read_pubtator(data["dev"]), KBVectors(kb))(SapEncoder.load(result.encoder_dir))
    assert kept == pytest.approx(max(scores))
    assert result.kept_start == (result.start_score >= max(result.train.scores))


def test_no_trainable_mentions_is_a_clear_error(tiny_bert_dir, data, tmp_path):
    bad = write_pubtator(tmp_path / "bad.txt", [("unknown thing", "D999999")])
    with pytest.raises(InputError, match="none of its 1 mentions"):
        finetune(bad, data["kb"], tiny_bert_dir, tmp_path / "run", kb_format="tsv", show_progress=False,
                 encoder_options=MEAN)


def test_cli(tiny_bert_dir, data, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    base = tmp_path / "base"
    SapEncoder.load(tiny_bert_dir, pooling="mean").save(base)
    args = ["finetune", str(data["train"]), str(data["kb"]), str(base), str(tmp_path / "run"), "--format", "tsv",
            "--dev", str(data["dev"]), "--epochs", "1", "--batch-size", "8", "--negatives", "2", "--lr", "1e-3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 mentions with ids absent from the KB" in result.output and "Dev Acc@1: start" in result.output
    assert (tmp_path / "run" / ENCODER / "sap_encoder.json").exists()
    bad = CliRunner().invoke(app, args[:2] + [str(tmp_path / "missing.tsv")] + args[3:])
    assert bad.exit_code == 1 and "missing.tsv" in bad.output and "Traceback" not in bad.output


def test_kb_index_of_the_start_encoder_is_reused(tiny_bert_dir, data, tmp_path, monkeypatch):
    from spacy_el.kb.index import ConceptIndex

    kb = read_kb(data["kb"], "tsv")
    start_index = ConceptIndex.build(kb, SapEncoder.load(tiny_bert_dir, pooling="mean"))
    builds = []
    original = ConceptIndex.build.__func__
    monkeypatch.setattr(ConceptIndex, "build",
                        classmethod(lambda cls, *a, **k: builds.append(1) or original(cls, *a, **k)))
    run = dict(kb_format="tsv", config=TrainConfig(epochs=1, checkpoint_every=0), batch_size=8, n_negatives=2,
               show_progress=False)
    finetune(data["train"], kb, tiny_bert_dir, tmp_path / "a", kb_index=start_index, encoder_options=MEAN, **run)
    assert builds == []  # the first epoch mined in the given index
    other = ConceptIndex.build(kb, SapEncoder.load(tiny_bert_dir, pooling="cls"))
    builds.clear()
    finetune(data["train"], kb, tiny_bert_dir, tmp_path / "b", kb_index=other, encoder_options=MEAN, **run)
    assert builds == [1]  # another encoder's index is not used
