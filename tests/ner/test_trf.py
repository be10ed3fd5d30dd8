"""configs/ner_bilstm_trf.cfg: a spacy-transformers `transformer` (a tiny BERT built in the test)
feeds bilstm_ner through a TransformerListener; it trains with `spacy train` and round-trips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

pytest.importorskip("spacy_transformers")

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ner_bilstm_trf.cfg"


def test_trf_config_trains_and_round_trips(tmp_path, tiny_bert_dir, kit):
    from spacy.cli.train import train

    nlp = spacy.blank("en")
    docs = [eg.reference for eg in kit.make_examples(nlp)]
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    overrides = {**kit.trf_overrides(tmp_path / "train.spacy", tiny_bert_dir),
                 "training.max_steps": 4, "training.eval_frequency": 2}
    train(CONFIG, tmp_path / "out", overrides=overrides)
    loaded = spacy.load(tmp_path / "out" / "model-last")
    assert loaded.pipe_names == ["transformer", "bilstm_ner"]
    ner = loaded.get_pipe("bilstm_ner")
    assert ner.has_crf and ner.labels == ("LOC", "ORG", "PER")
    text = kit.TRAIN_DATA[1][0]

    def emissions(nlp):
        return ner_of(nlp).model.predict([nlp(text)])[0]

    def ner_of(nlp):
        return nlp.get_pipe("bilstm_ner")

    before = emissions(loaded)
    assert before.shape == (len(loaded.make_doc(text)), len(ner.tags)) and np.abs(before).sum() > 0
    again = spacy.blank("en")
    for name in loaded.pipe_names:
        again.add_pipe(name, config={k: v for k, v in loaded.config["components"][name].items() if k != "factory"})
    again.from_bytes(loaded.to_bytes())
    assert np.allclose(emissions(again), before, atol=1e-5)
    assert [d.ents for d in loaded.pipe(["", text])][0] == ()
    scores = loaded.evaluate([Example(loaded.make_doc(d.text), d) for d in docs])
    assert "ents_f" in scores


def test_fine_tuned_trf_config_trains_the_transformer_at_its_own_rate(tmp_path, tiny_bert_dir, kit):
    """configs/ner_bilstm_kb_trf.cfg: gazetteer + transformer + tagger; the transformer is not
    frozen, so its weights move (at a fortieth of the tagger's rate) and the pipeline round-trips."""
    import torch
    from spacy.cli.train import train
    from transformers import AutoModel

    nlp = spacy.blank("en")
    docs = [eg.reference for eg in kit.make_examples(nlp)]
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    kb = tmp_path / "kb.tsv"
    kb.write_text("C1\tLondon\nC2\tApple Inc\n")
    overrides = {**kit.trf_overrides(tmp_path / "train.spacy", tiny_bert_dir),
                 "paths.kb": str(kb), "paths.kb_format": "tsv",
                 "training.max_steps": 4, "training.eval_frequency": 2, "training.optimizer.use_averages": False}
    train(CONFIG.with_name("ner_bilstm_kb_trf.cfg"), tmp_path / "out", overrides=overrides)
    loaded = spacy.load(tmp_path / "out" / "model-last")
    assert loaded.pipe_names == ["kb_gazetteer", "transformer", "bilstm_ner"]
    before = dict(AutoModel.from_pretrained(tiny_bert_dir).named_parameters())
    after = dict(loaded.get_pipe("transformer").model.transformer.named_parameters())
    moved = [name for name, p in after.items() if name in before and not torch.equal(p.detach(), before[name].detach())]
    assert any(name.startswith("encoder.") for name in moved)  # fine-tuned, not frozen
    step = max(float((after[n] - before[n]).detach().abs().max()) for n in moved)
    assert step <= 4 * 0.002 * 0.025 * 1.01  # 4 Adam steps at the transformer's scaled rate at most
    text = kit.TRAIN_DATA[1][0]
    again = spacy.blank("en")
    for name in loaded.pipe_names:
        again.add_pipe(name, config={k: v for k, v in loaded.config["components"][name].items() if k != "factory"})
    again.from_bytes(loaded.to_bytes())
    assert [e.text for e in again(text).ents] == [e.text for e in loaded(text).ents]
