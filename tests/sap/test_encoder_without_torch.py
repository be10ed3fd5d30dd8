"""Without torch, a pipeline whose linker serves a PyTorch encoder fails to load with one line
that says what to install or to export; an ONNX encoder needs neither (tests/ner/test_without_torch.py)."""
from __future__ import annotations

import subprocess
import sys

import spacy

from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.encoder import SapEncoder


def test_a_torch_encoder_without_torch_says_what_to_install_or_export(tiny_bert_dir, tmp_path):
    encoder = SapEncoder.load(tiny_bert_dir, device="cpu")
    nlp = spacy.blank("en")
    nlp.add_pipe("sap_linker", config={"threshold": 0.0}).initialize(
        encoder_loader=lambda: encoder,
        index_loader=lambda enc: ConceptIndex.build(ConceptTable.from_rows([("Q90", "Paris")]), enc, "Flat"))
    nlp.to_disk(tmp_path / "pipe")
    proc = subprocess.run([sys.executable, "-c", """
import importlib.metadata as md, sys
sys.modules["torch"] = None  # as if torch were not installed
import catalogue  # nor spacy-transformers, which imports torch
catalogue.AVAILABLE_ENTRY_POINTS = md.EntryPoints(
    ep for dist in md.distributions() for ep in dist.entry_points if not ep.value.startswith("spacy_transformers"))
import spacy
spacy.load(sys.argv[1])
""", str(tmp_path / "pipe")], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "needs torch and transformers" in last and "pip install 'spacy-el[train]'" in last
    assert "export-onnx" in last
