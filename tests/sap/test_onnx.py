"""OnnxEncoder: an export serves the same vectors as its torch source (fp32), int8 stays close,
fingerprints say which index fits, and it works wherever a SapEncoder does (index, linker, disk)."""
import json
import sys
import warnings

import numpy as np
import pytest
import spacy

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.encoders import load_encoder
from spacy_el.sap.onnx import OnnxEncoder

pytest.importorskip("onnxruntime")

NAMES = ["heart attack", "myocardial infarction", "colon cancer", "G6PD deficiency", "x", "",
         "ataxia-telangiectasia " * 40]


@pytest.fixture(scope="module")
def torch_encoder(tiny_bert_dir):
    return SapEncoder.load(tiny_bert_dir, pooling="mean", device="cpu")


@pytest.fixture(scope="module")
def exports(torch_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return (OnnxEncoder.export(torch_encoder, root / "fp32"),
            OnnxEncoder.export(torch_encoder, root / "int8", quantize=True))


def test_fp32_export_equals_torch_and_keeps_fingerprint(torch_encoder, exports):
    fp32, _ = exports
    ref = torch_encoder.embed(NAMES)
    got = fp32.embed(NAMES, batch_size=3)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert fp32.fingerprint == torch_encoder.fingerprint and fp32.dim == torch_encoder.dim
    assert fp32.embed([]).shape == (0, fp32.dim)
    with pytest.raises(InputError, match="batch_size"):
        fp32.embed(["a"], batch_size=0)


def test_int8_export_is_close_but_has_its_own_fingerprint(torch_encoder, exports):
    fp32, int8 = exports
    cos = (int8.embed(NAMES) * torch_encoder.embed(NAMES)).sum(1)
    assert cos.min() > 0.9
    assert int8.fingerprint != fp32.fingerprint and int8.settings.quantize
    index = ConceptIndex.from_vectors(ConceptTable.from_rows([("C1", "heart attack")]), fp32.embed(["heart attack"]),
                                      encoder=fp32)
    index.check_encoder(fp32)
    with pytest.raises(InputError, match="fingerprint"):
        index.check_encoder(int8)


def test_load_encoder_dispatches_and_refuses_fixed_settings(exports, tiny_bert_dir):
    fp32, _ = exports
    assert isinstance(load_encoder(fp32.directory), OnnxEncoder)
    assert isinstance(load_encoder(tiny_bert_dir), SapEncoder)
    with pytest.raises(InputError, match="pooling"):
        load_encoder(fp32.directory, pooling="cls")
    with pytest.raises(InputError, match="not an ONNX encoder"):
        OnnxEncoder.load(tiny_bert_dir)


def test_missing_model_file_is_a_clear_error(exports, tmp_path):
    fp32, _ = exports
    fp32.save(tmp_path / "copy")
    (tmp_path / "copy" / "model.onnx").unlink()
    with pytest.raises(InputError, match="model.onnx is missing"):
        OnnxEncoder.load(tmp_path / "copy")


def test_cuda_request_falls_back_to_cpu(exports):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.warns(UserWarning, match="CPU"):
        enc = OnnxEncoder.load(exports[0].directory, device="cuda")
    assert enc.device == "cpu"
    np.testing.assert_allclose(enc.embed(NAMES[:2]), exports[0].embed(NAMES[:2]), atol=1e-6)


def test_linker_with_onnx_encoder_round_trips_without_transformers(exports, tmp_path):
    _, int8 = exports
    table = ConceptTable.from_rows([("C1", "heart attack"), ("C1", "myocardial infarction"), ("C2", "colon cancer")])
    nlp = spacy.blank("en")
    nlp.add_pipe("sap_linker", config={"top_k": 2, "threshold": 0.0})
    nlp.get_pipe("sap_linker").initialize(encoder_loader=lambda: int8,
                                          index_loader=lambda enc: ConceptIndex.build(table, enc, "Flat"))
    doc = nlp.make_doc("He had colon cancer and a heart attack.")
    doc.ents = [doc.char_span(7, 19, label="Disease"), doc.char_span(26, 38, label="Disease")]
    before = [(e.kb_id_, e._.kb_candidates) for e in nlp.get_pipe("sap_linker")(doc).ents]
    nlp.to_disk(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "sap_linker" / "encoder" / "sap_encoder.json").read_text())["runtime"] == "onnx"
    # a fresh interpreter: loading and linking must not import transformers
    code = (
        "import sys, spacy; nlp = spacy.load(sys.argv[1]); doc = nlp.make_doc('He had colon cancer.');"
        "doc.ents = [doc.char_span(7, 19, label='Disease')]; doc = nlp.get_pipe('sap_linker')(doc);"
        "print(doc.ents[0].kb_id_, 'transformers' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pipe")], capture_output=True, text=True,
                         check=True).stdout.split()
    # spacy-transformers (when installed) registers entry points that spaCy itself imports, with
    # transformers, in spacy.blank/spacy.load; what this checks is that spacy-el does not
    import importlib.util

    assert out[0] == before[0][0]
    assert out[1] == str(importlib.util.find_spec("spacy_transformers") is not None)
    loaded = spacy.load(tmp_path / "pipe")
    doc2 = nlp.make_doc("He had colon cancer and a heart attack.")
    doc2.ents = [doc2.char_span(7, 19, label="Disease"), doc2.char_span(26, 38, label="Disease")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after = [(e.kb_id_, e._.kb_candidates) for e in loaded.get_pipe("sap_linker")(doc2).ents]
    assert [a[0] for a in after] == [b[0] for b in before]
    for (_, ca), (_, cb) in zip(after, before):
        assert [c.concept_id for c in ca] == [c.concept_id for c in cb]
        np.testing.assert_allclose([c.score for c in ca], [c.score for c in cb], atol=1e-5)
