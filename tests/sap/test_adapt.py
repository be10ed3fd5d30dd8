"""`spacy-el adapt-encoder`: masked-language modelling on in-domain text, on a tiny BERT."""
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import spacy_el.sap.adapt as adapt
from spacy_el.cli import app
from spacy_el.io import InputError
from spacy_el.sap.adapt import CHECKPOINT, ENCODER, adapt_encoder, definition_texts, document_texts, kb_texts, windows

TEXTS = [f"Patients with cystic fibrosis type {i} developed chronic pancreatitis and renal failure." for i in range(30)]

PUBTATOR = """111|t|Cystic fibrosis in children.
111|a|Chronic pancreatitis was seen.
111\t0\t15\tCystic fibrosis\tDisease\tD003550

222|t|Renal failure.
222|a|After cisplatin.
"""

OBO = """format-version: 1.2

[Term]
id: DOID:1
name: disease one
def: "A disease that affects the lungs." [url:x]

[Term]
id: DOID:2
name: disease two
"""


def _mlm_loss(model_dir, tokenizer_dir, texts=TEXTS) -> float:
    """The masked-LM loss of an adapted run's full model (head included) on fixed masks."""
    from transformers import AutoTokenizer, DataCollatorForWholeWordMask

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(1)
    random.seed(1)
    batch = DataCollatorForWholeWordMask(tokenizer, mlm_probability=0.15)(
        [{"input_ids": w} for w in windows(texts, tokenizer, 32)])
    with torch.no_grad():
        return float(adapt._masked_lm_loss(model_dir.eval(), batch))


def _run(base, out, **kwargs):
    settings = dict(epochs=4, batch_size=4, max_length=32, lr=5e-3, seed=2, checkpoint_every=5, show_progress=False)
    return adapt_encoder(TEXTS, base, out, **{**settings, **kwargs})


def test_adapting_lowers_the_masked_lm_loss_and_saves_the_encoder_without_head(tiny_bert_dir, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM

    torch.manual_seed(0)
    before = _mlm_loss(AutoModelForMaskedLM.from_pretrained(str(tiny_bert_dir)), tiny_bert_dir)
    result = _run(tiny_bert_dir, tmp_path / "run")
    assert result.steps == 4 * -(-result.windows // 4) and len(result.losses) == result.steps
    saved = torch.load(tmp_path / "run" / CHECKPOINT / "state.pt", weights_only=False)
    full = AutoModelForMaskedLM.from_pretrained(str(tiny_bert_dir))
    full.load_state_dict(saved["model"])
    assert _mlm_loss(full, tiny_bert_dir) < 0.8 * before
    weights = load_file(str(result.encoder_dir / "model.safetensors"))
    assert not any(key.startswith("cls.") for key in weights)
    encoder = AutoModel.from_pretrained(str(result.encoder_dir))
    base = AutoModel.from_pretrained(str(tiny_bert_dir))
    assert not torch.equal(encoder.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)
    assert (tmp_path / "run" / "adapt.json").exists()


def test_the_base_pooling_files_go_with_the_encoder(tiny_bert_dir, tmp_path):
    from spacy_el.sap.encoder import SapEncoder

    base = tmp_path / "base"
    shutil.copytree(tiny_bert_dir, base)
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    result = _run(base, tmp_path / "run", max_steps=2)
    assert SapEncoder.load(result.encoder_dir).settings.pooling == "mean"


def test_resume_after_interruption_equals_uninterrupted_run(tiny_bert_dir, tmp_path, monkeypatch):
    straight = _run(tiny_bert_dir, tmp_path / "straight", epochs=2)
    original, calls = adapt._masked_lm_loss, [0]

    def killed_at_call_8(model, batch):
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return original(model, batch)

    monkeypatch.setattr(adapt, "_masked_lm_loss", killed_at_call_8)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_bert_dir, tmp_path / "resumed", epochs=2)
    assert not (tmp_path / "resumed" / ENCODER).exists()
    monkeypatch.setattr(adapt, "_masked_lm_loss", original)
    resumed = _run(tiny_bert_dir, tmp_path / "resumed", epochs=2, resume=True)
    assert resumed.steps == straight.steps
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a = load_file(str(straight.encoder_dir / "model.safetensors"))
    b = load_file(str(resumed.encoder_dir / "model.safetensors"))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


def test_a_checkpoint_of_other_texts_is_refused(tiny_bert_dir, tmp_path):
    _run(tiny_bert_dir, tmp_path / "run", max_steps=2)
    with pytest.raises(InputError, match="other texts or settings"):
        adapt_encoder(TEXTS[:10], tiny_bert_dir, tmp_path / "run", max_steps=2, batch_size=4, max_length=32,
                      resume=True, show_progress=False)


def test_bad_settings(tiny_bert_dir, tmp_path):
    with pytest.raises(InputError, match="mlm_probability"):
        adapt_encoder(TEXTS, tiny_bert_dir, tmp_path, mlm_probability=0, show_progress=False)
    with pytest.raises(InputError, match="no words"):
        adapt_encoder(["", " "], tiny_bert_dir, tmp_path, show_progress=False)


def test_windows_pack_texts_between_cls_and_sep(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    packed = windows(TEXTS, tokenizer, 16)
    assert len(packed) > 1 and all(len(w) == 16 for w in packed)
    assert all(w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in packed)
    assert windows(["one short text"], tokenizer, 16)[0][1:-1] == tokenizer("one short text")["input_ids"][1:]


def test_texts_of_documents_kbs_and_definitions(tmp_path):
    (tmp_path / "c.txt").write_text(PUBTATOR)
    assert document_texts(tmp_path / "c.txt") == ["Cystic fibrosis in children. Chronic pancreatitis was seen.",
                                                  "Renal failure. After cisplatin."]
    (tmp_path / "medic.txt").write_text("D003550||Cystic Fibrosis|Mucoviscidosis\nD051437||Renal Insufficiency\n")
    assert kb_texts(tmp_path / "medic.txt", "medic") == ["Cystic Fibrosis; Mucoviscidosis.", "Renal Insufficiency."]
    (tmp_path / "d.obo").write_text(OBO)
    assert definition_texts(tmp_path / "d.obo") == ["A disease that affects the lungs."]
    (tmp_path / "none.obo").write_text(OBO.replace('def: "A disease that affects the lungs." [url:x]\n', ""))
    with pytest.raises(InputError, match="none.obo.*no term definitions"):
        definition_texts(tmp_path / "none.obo")


def test_cli(tiny_bert_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["adapt-encoder", str(tmp_path / "run")])
    assert result.exit_code == 1 and "no text" in result.output
    (tmp_path / "c.txt").write_text(PUBTATOR)
    result = runner.invoke(app, ["adapt-encoder", str(tmp_path / "run"), "--docs", str(tmp_path / "c.txt"),
                                 "--base", str(tiny_bert_dir), "--max-steps", "2", "--max-length", "8"])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and (tmp_path / "run" / ENCODER / "model.safetensors").exists()


def test_a_batch_without_masks_gives_a_zero_loss_not_nan(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(tiny_bert_dir))
    ids = torch.tensor([[101, 2028, 102]])
    loss = adapt._masked_lm_loss(model, {"input_ids": ids, "labels": torch.full_like(ids, -100)})
    assert float(loss.detach()) == 0.0 and loss.requires_grad
