import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from spacy_el.io import InputError
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.settings import SETTINGS_FILE

NAMES = ["heart attack", "myocardial infarction", "colon cancer", "type 2 diabetes mellitus",
         "G6PD deficiency", "x", "", "ataxia-telangiectasia"]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return SapEncoder.load(tiny_bert_dir, pooling="mean", device="cpu")


def test_normalised_deterministic(encoder):
    a = encoder.embed(NAMES)
    assert a.dtype == np.float32 and a.shape == (len(NAMES), 32) and encoder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, encoder.embed(NAMES))
    assert not np.allclose(a[0], a[2])


def test_batch_size_and_order_do_not_change_vectors(encoder):
    ref = encoder.embed(NAMES, batch_size=256)
    np.testing.assert_allclose(encoder.embed(NAMES, batch_size=1), ref, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(NAMES))
    np.testing.assert_allclose(encoder.embed([NAMES[i] for i in perm], batch_size=3), ref[perm], atol=1e-5)


def test_empty_input(encoder):
    assert encoder.embed([]).shape == (0, encoder.dim)
    with pytest.raises(InputError, match="batch_size"):
        encoder.embed(["a"], batch_size=0)


def test_long_texts_truncated_to_max_length(tiny_bert_dir):
    enc = SapEncoder.load(tiny_bert_dir, pooling="mean", max_length=8)
    long = "familial adenomatous polyposis " * 200  # far beyond the model's 128 positions
    a, b = enc.embed([long, long + " with extra words at the end"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert enc.tokenize([long])["input_ids"].shape[1] == 8


def test_save_load_identical(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    meta = json.loads((tmp_path / "enc" / SETTINGS_FILE).read_text())
    assert meta["pooling"] == "mean" and meta["max_length"] == 25 and meta["dim"] == 32
    again = SapEncoder.load(tmp_path / "enc")
    assert again.settings == encoder.settings and again.fingerprint == encoder.fingerprint == meta["fingerprint"]
    np.testing.assert_array_equal(again.embed(NAMES), encoder.embed(NAMES))


def test_fingerprint_tracks_settings_and_weights(tiny_bert_dir):
    mean = SapEncoder.load(tiny_bert_dir, pooling="mean")
    fp = mean.fingerprint
    assert SapEncoder.load(tiny_bert_dir, pooling="cls").fingerprint != fp
    assert SapEncoder.load(tiny_bert_dir, pooling="mean", lowercase=True).fingerprint != fp
    assert SapEncoder.load(tiny_bert_dir, pooling="mean", quantize=True).fingerprint != fp
    with torch.no_grad():
        next(mean.model.parameters()).add_(0.01)
    assert mean.fingerprint != fp


def test_pooling_from_sentence_transformers_config(tiny_bert_dir, tmp_path):
    assert SapEncoder.load(tiny_bert_dir).settings.pooling == "cls"  # SapBERT's default
    st = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, st)
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert SapEncoder.load(st).settings.pooling == "mean"
    assert SapEncoder.load(st, pooling="cls").settings.pooling == "cls"


def test_lowercase_setting(tiny_bert_dir, tmp_path):
    """On a *cased* tokenizer (the fixture's MiniLM tokenizer lowercases by itself, which would let
    this pass with the setting ignored) case changes the vector unless `lowercase` is set."""
    import shutil

    from transformers import AutoTokenizer

    cased = tmp_path / "cased"
    shutil.copytree(tiny_bert_dir, cased)
    AutoTokenizer.from_pretrained(str(tiny_bert_dir), do_lower_case=False).save_pretrained(cased)
    plain = SapEncoder.load(cased, pooling="mean")
    assert not plain.uncased
    a, b = plain.embed(["Heart ATTACK", "heart attack"])
    assert float(a @ b) < 1 - 1e-4  # the tokenizer really is cased
    enc = SapEncoder.load(cased, pooling="mean", lowercase=True)
    assert enc.uncased
    a, b = enc.embed(["Heart ATTACK", "heart attack"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_quantized_path(tiny_bert_dir, encoder):
    fast = SapEncoder.load(tiny_bert_dir, pooling="mean", quantize=True)
    vecs = fast.embed(NAMES)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in fast._inference_model().modules())
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in fast.model.modules())
    assert (vecs * encoder.embed(NAMES)).sum(1).min() > 0.9  # int8 stays close to fp32


def test_bad_settings(tiny_bert_dir, tmp_path):
    with pytest.raises(InputError, match="pooling"):
        SapEncoder.load(tiny_bert_dir, pooling="max")
    with pytest.raises(InputError, match="max_length"):
        SapEncoder.load(tiny_bert_dir, max_length=0)
    with pytest.raises(InputError, match="device"):
        SapEncoder.load(tiny_bert_dir, device="tpu")
    with pytest.raises(InputError, match="cannot load"):
        SapEncoder.load(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_request_falls_back_to_cpu(tiny_bert_dir):
    with pytest.warns(UserWarning, match="CUDA is not available"):
        enc = SapEncoder.load(tiny_bert_dir, device="cuda")
    assert enc.device.type == "cpu"
    assert enc.embed(["x"]).shape == (1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SapEncoder.load(tiny_bert_dir, device="auto").device.type == "cpu"


def test_num_threads_respected_and_restored(tiny_bert_dir):
    enc = SapEncoder.load(tiny_bert_dir, num_threads=2)
    seen = []
    enc.model.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    enc.embed(["a", "b"])
    assert seen == [2] and torch.get_num_threads() == before


@pytest.mark.gpu
def test_gpu_embed(tiny_bert_dir):
    enc = SapEncoder.load(tiny_bert_dir, device="cuda", pooling="mean")
    cpu = SapEncoder.load(tiny_bert_dir, device="cpu", pooling="mean")
    np.testing.assert_allclose(enc.embed(NAMES), cpu.embed(NAMES), atol=2e-2)
