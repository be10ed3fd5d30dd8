"""The `demo` workflow of project.yml, end to end on a reduced size: a tiny random BERT instead of
MiniLM, a few pretraining steps and a short NER training. Every step runs for real, up to the
wheel installed into a fresh venv that must give the same links as the assembled pipeline."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "training", "corpus", "packages", "metrics", "display",
                              "__pycache__", "*.egg-info", "build", "dist")


@pytest.mark.slow  # builds a wheel and installs it into a fresh venv: minutes; run with -m slow
def test_demo_workflow_reduced(tmp_path, tiny_bert_dir):
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=SKIP)
    # A 40-step tagger may find no entity in the sample (hence min_links 0); linking itself is
    # checked below on the assembled pipeline with a given span. The tiny BERT's 32 dimensions
    # cannot be split into PQ96's 96 sub-vectors, so its index is Flat.
    overrides = {"base_encoder": str(tiny_bert_dir), "pretrain_steps": "2", "ner_max_steps": "40",
                 "ner_width": "32", "min_links": "0", "index_type": "Flat", "vectors_limit": "5000"}
    cmd = [sys.executable, "-m", "spacy", "project", "run", "demo", str(project)]
    cmd += [arg for key, value in overrides.items() for arg in (f"--vars.{key}", value)]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "OK: en_disease_el_demo installed" in proc.stdout
    linking = json.loads((project / "metrics" / "linking.json").read_text())["linking"]
    assert linking["n"] == 787 and linking["n_missing_from_kb"] < 50  # DO xrefs cover NCBI's MeSH/OMIM ids
    assert (project / "display" / "demo.html").read_text().startswith("<!DOCTYPE html>")
    nlp = spacy.load(project / "training" / "pipeline")
    assert nlp.pipe_names == ["kb_gazetteer", "bilstm_ner", "abbreviation_detector", "sap_linker"]
    assert nlp.vocab.vectors.shape[0] <= 3 * 5000  # pruned GloVe (each row keyed also as Title, UPPER)
    doc = nlp("Germline mutations cause familial adenomatous polyposis.")
    assert "familial adenomatous polyposis" in [s.text for s in doc.spans["kb_names"]]
    doc = nlp.make_doc("Familial adenomatous polyposis is inherited.")
    doc.ents = [Span(doc, 0, 3, label="Disease")]
    doc = nlp.get_pipe("sap_linker")(doc)
    (ent,) = doc.ents
    assert ent.kb_id_.startswith("DOID:") and ent._.kb_candidates[0].concept_id == ent.kb_id_
    assert list((project / "packages" / "en_disease_el_demo-0.1.0" / "dist").glob("*.whl"))



def test_distill_command_serves_a_student(tmp_path, tiny_bert_dir):
    """`spacy project run distill`, then export-onnx serving the student (`serve_from`)."""
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=SKIP)
    run = [sys.executable, "-m", "spacy", "project", "run"]
    student = ["--vars.distill_teacher", str(tiny_bert_dir), "--vars.distill_epochs", "1"]
    proc = subprocess.run(run + ["distill", str(project)] + student, cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Distilled a 0-layer student" in proc.stdout
    stats = json.loads((project / "training" / "student" / "distill.json").read_text())
    assert stats["layers"] == 0 and stats["n_texts"] > 10_000  # Disease Ontology names + NCBI train mentions
    proc = subprocess.run(run + ["export-onnx", str(project), "--vars.serve_from", "training/student/encoder"],
                          cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    meta = json.loads((project / "training" / "serving_encoder" / "sap_encoder.json").read_text())
    assert meta["source_fingerprint"] == stats_fingerprint(project / "training" / "student" / "encoder")


def stats_fingerprint(encoder_dir: Path) -> str:
    return json.loads((encoder_dir / "sap_encoder.json").read_text())["fingerprint"]
