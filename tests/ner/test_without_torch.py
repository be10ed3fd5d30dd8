"""bilstm_ner serves without torch: a pipeline trained with torch loads in an interpreter where
`import torch` fails, tags the same entities (its BiLSTM and character CNN run in numpy), links
them with an ONNX encoder, saves and loads again; the weights' files read and write without torch.

The torch-free interpreter blocks torch with `sys.modules["torch"] = None` (an entry that holds
None is the block, not an import) and hides the entry
points of spacy-transformers (a test dependency that imports torch when spaCy registers it), as
an environment without either package would have neither."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import spacy
import torch

from spacy_el.ner.features import CharCNN
from spacy_el.ner.model import PackedBiLSTM
from spacy_el.ner.modules import prediction_backend, read_state, write_state
from spacy_el.ner.numpy_forward import packing

TEXTS = ["Barack Obama visited Paris last week .", "Google hired John Smith in London .",
         "Angela Merkel met executives from Siemens in Berlin .", "", "Nothing to see here",
         "Apple opened a store in New York City while Fans in London cheered for Arsenal ."]

WITHOUT_TORCH = """
import importlib.metadata as md, json, sys
sys.modules["torch"] = None
import catalogue
catalogue.AVAILABLE_ENTRY_POINTS = md.EntryPoints(
    ep for dist in md.distributions() for ep in dist.entry_points if not ep.value.startswith("spacy_transformers"))
import spacy
"""


def run_without_torch(body: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + body, *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def entities(nlp, texts=TEXTS) -> list:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


@pytest.fixture(scope="module")
def v2_dir(kit, tmp_path_factory):
    """A trained CRF tagger with characters (no gazetteer), saved."""
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=dict(kit.TINY_V2["features"], gazetteers=[]))})
    kit.train_tiny(nlp, kit.make_examples(nlp), n_iter=30)
    path = tmp_path_factory.mktemp("torchfree") / "v2"
    nlp.to_disk(path)
    return path


LOAD_AND_TAG = """
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])
ents = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
nlp.to_disk(sys.argv[3])
again = spacy.load(sys.argv[3])
same = ents == [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in again.pipe(texts)]
from_bytes = spacy.blank("en").from_config(nlp.config).from_bytes(nlp.to_bytes())
same_bytes = ents == [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in from_bytes.pipe(texts)]
print(json.dumps({"ents": ents, "round_trips": same and same_bytes,
                  "torch": sorted(m for m, mod in sys.modules.items()
                                 if mod is not None and m.split(".")[0] in ("torch", "transformers"))}))
"""


def test_a_pipeline_trained_with_torch_tags_the_same_without_it(v2_dir, tmp_path):
    nlp = spacy.load(v2_dir)
    with prediction_backend("torch"):
        expected = entities(nlp)
    assert any(expected), "the tiny tagger found no entity: nothing is compared"
    assert entities(nlp) == expected  # the numpy path, torch installed
    out = run_without_torch(LOAD_AND_TAG, str(v2_dir), json.dumps(TEXTS), str(tmp_path / "saved"))
    assert out["torch"] == []
    assert [[tuple(e) for e in doc] for doc in out["ents"]] == expected
    assert out["round_trips"]
    # saved without torch (numpy state format), loaded back where torch trains: same weights
    with prediction_backend("torch"):
        assert entities(spacy.load(tmp_path / "saved")) == expected


def test_the_softmax_tagger_v1_serves_without_torch(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "v1")
    with prediction_backend("torch"):
        expected = entities(trained_nlp)
    out = run_without_torch(LOAD_AND_TAG, str(tmp_path / "v1"), json.dumps(TEXTS), str(tmp_path / "saved"))
    assert out["torch"] == [] and out["round_trips"]
    assert [[tuple(e) for e in doc] for doc in out["ents"]] == expected


def test_an_ensemble_serves_without_torch(kit, v2_dir, tmp_path):
    from spacy_el.ner.ensemble import assemble_ensemble

    other = spacy.blank("en")
    other.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=dict(kit.TINY_V2["features"], gazetteers=[]))})
    kit.train_tiny(other, kit.make_examples(other), n_iter=20)
    other.to_disk(tmp_path / "other")
    path = assemble_ensemble([v2_dir, tmp_path / "other"], tmp_path / "ensemble")
    with prediction_backend("torch"):
        expected = entities(spacy.load(path))
    out = run_without_torch(LOAD_AND_TAG, str(path), json.dumps(TEXTS), str(tmp_path / "saved"))
    assert out["torch"] == [] and out["round_trips"]
    assert [[tuple(e) for e in doc] for doc in out["ents"]] == expected


def test_training_without_torch_says_what_to_install(v2_dir):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + """
from spacy.training import Example
nlp = spacy.load(sys.argv[1])
eg = Example.from_dict(nlp.make_doc("Barack Obama"), {"entities": [(0, 12, "PER")]})
nlp.update([eg])
""", str(v2_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "pip install 'spacy-el[train]'" in proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def linked_dir(v2_dir, tiny_bert_dir, tmp_path_factory):
    """bilstm_ner + sap_linker (ONNX encoder, FAISS index), saved; and the links it gives here."""
    pytest.importorskip("onnxruntime")
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.table import ConceptTable
    from spacy_el.sap.encoder import SapEncoder
    from spacy_el.sap.onnx import OnnxEncoder

    root = tmp_path_factory.mktemp("torchfree_linked")
    onnx = OnnxEncoder.export(SapEncoder.load(tiny_bert_dir, device="cpu"), root / "encoder")
    table = ConceptTable.from_rows([("Q1", "Barack Obama"), ("Q90", "Paris"), ("Q95", "Google"), ("Q84", "London")])
    nlp = spacy.load(v2_dir)
    linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 2})
    linker.initialize(encoder_loader=lambda: onnx, index_loader=lambda enc: ConceptIndex.build(table, enc, "Flat"))
    nlp.to_disk(root / "pipe")
    expected = [[[e.text, e.label_, e.kb_id_] for e in doc.ents] for doc in nlp.pipe(TEXTS)]
    assert any(kb for doc in expected for _, _, kb in doc)
    return root / "pipe", expected


LINK = """
import json, sys, spacy
nlp = spacy.load(sys.argv[1])
links = [[[e.text, e.label_, e.kb_id_] for e in doc.ents] for doc in nlp.pipe(json.loads(sys.argv[2]))]
print(json.dumps({"links": links, "heavy": sorted({m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}
                                                 & {"torch", "transformers", "pyarrow"})}))
"""


def test_tagger_and_onnx_linker_link_without_torch(linked_dir):
    path, expected = linked_dir
    out = run_without_torch(LINK, str(path), json.dumps(TEXTS))
    assert out["heavy"] == []
    assert out["links"] == expected


@pytest.mark.slow  # builds this checkout's wheel and installs it into a fresh venv: minutes; run with -m slow
def test_a_serving_install_has_no_torch_and_links_the_same(linked_dir, tmp_path):
    """`pip install spacy-el` (this checkout's wheel, its dependencies from the package index) in a
    fresh venv: no torch, transformers or pyarrow installed, and the pipeline links the same."""
    from pathlib import Path

    path, expected = linked_dir
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"), str(repo)],
                   check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    (wheel,) = (tmp_path / "wheels").glob("spacy_el-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    have = {r["name"].lower() for r in json.loads(subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], check=True, capture_output=True, text=True).stdout)}
    assert not have & {"torch", "transformers", "pyarrow", "spacy-transformers"}
    proc = subprocess.run([python, "-c", LINK, str(path), json.dumps(TEXTS)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"links": expected, "heavy": []}


# -- the parts ----------------------------------------------------------------------------------
def test_torch_save_state_reads_without_torch_and_the_numpy_format_reads_back_into_torch():
    torch.manual_seed(0)
    module = torch.nn.LSTM(5, 3, bidirectional=True)
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    state = read_state(buf.getvalue())
    assert set(state) == set(module.state_dict())
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(state[name], value.numpy())
    again = read_state(write_state(state))
    assert all(np.array_equal(again[k], state[k]) and again[k].dtype == np.float32 for k in state)
    with pytest.raises(ValueError, match="unknown format"):
        read_state(b"\x81\xa1a\x01")


@pytest.mark.parametrize("lengths", [[4, 0, 7, 1, 7, 3], [1], [30, 2]])
def test_numpy_bilstm_equals_torch(lengths):
    torch.manual_seed(0)
    layer = PackedBiLSTM(6, 5)
    layer.initialize()
    Xs = [np.random.default_rng(i).normal(size=(n, 5)).astype("f") for i, n in enumerate(lengths)]
    with prediction_backend("torch"):
        expected = layer.predict(Xs)
    for got, want in zip(layer.predict(Xs), expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_reverse_packing_reads_each_doc_from_its_end():
    lengths = [2, 0, 3]
    order, batch_sizes, restore = packing(lengths, reverse=True)
    assert batch_sizes.tolist() == [2, 2, 1]
    assert order.tolist() == [4, 1, 3, 0, 2]
    assert (order[restore] == np.arange(5)).all()


def test_numpy_char_cnn_equals_torch():
    torch.manual_seed(0)
    nlp = spacy.blank("en")
    docs = [nlp("Hello world, a tokenisation test with überlong words and é"), nlp("a b a b"), nlp("")]
    cnn = CharCNN(16, 12)
    cnn.initialize()
    with prediction_backend("torch"):
        expected = cnn.predict(docs)
    for got, want in zip(cnn.predict(docs), expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_tagger_with_transformer_features_names_the_missing_package(v2_dir, tmp_path):
    """Transformer features truly need torch (through spacy-transformers): without it, spaCy's
    registry error names the package to install, before any weight is read."""
    import shutil

    from spacy.util import load_config

    path = tmp_path / "trf"
    shutil.copytree(v2_dir, path)
    config = load_config(path / "config.cfg")
    config["components"]["bilstm_ner"]["model"]["features"].update(
        transformer={"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
                     "upstream": "*", "pooling": {"@layers": "reduce_mean.v1"}}, transformer_width=16)
    config.to_disk(path / "config.cfg")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + "spacy.load(sys.argv[1])", str(path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "Could not find function 'spacy-transformers.TransformerListener.v1'" in proc.stderr
    assert "make sure the package is installed" in proc.stderr
