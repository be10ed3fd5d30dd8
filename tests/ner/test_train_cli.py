"""`spacy train` with the bilstm_ner config (in-process, a few steps) and the init-vectors command."""
from __future__ import annotations

from pathlib import Path

import pytest
import spacy
from spacy.cli.train import train
from spacy.tokens import DocBin
from thinc.api import Config
from typer.testing import CliRunner

from spacy_el.cli import app


REPO = Path(__file__).resolve().parents[2]


def write_train(kit, tmp_path):
    nlp = spacy.blank("en")
    db = DocBin()
    for text, spans in kit.TRAIN_DATA:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in spans]
        db.add(doc)
    db.to_disk(tmp_path / "train.spacy")


def test_spacy_train_runs_with_repo_config(tmp_path, kit):
    write_train(kit, tmp_path)
    overrides = {
        "paths.train": str(tmp_path / "train.spacy"),
        "paths.dev": str(tmp_path / "train.spacy"),
        "components.bilstm_ner.model.features.include_static_vectors": False,
        "components.bilstm_ner.model.features.embed_width": 16,
        "components.bilstm_ner.model.hidden_width": 16,
        "training.max_steps": 6,
        "training.eval_frequency": 3,
    }
    train(REPO / "configs" / "ner_bilstm.cfg", tmp_path / "out", overrides=overrides)
    trained = spacy.load(tmp_path / "out" / "model-best")
    assert trained.pipe_names == ["bilstm_ner"]
    assert trained.get_pipe("bilstm_ner").labels == ("LOC", "ORG", "PER")
    trained("Barack Obama visited Paris .")


def test_spacy_train_with_the_train_mentions_gazetteer(tmp_path, kit):
    write_train(kit, tmp_path)
    kb = tmp_path / "kb.tsv"
    kb.write_text("Q1\tParis\nQ2\tBarack Obama\n")
    overrides = {"paths.train": str(tmp_path / "train.spacy"), "paths.dev": str(tmp_path / "train.spacy"),
                 "paths.kb": str(kb), "paths.kb_format": "tsv",
                 "components.bilstm_ner.model.features.include_static_vectors": False,
                 "components.bilstm_ner.model.features.embed_width": 16,
                 "components.bilstm_ner.model.hidden_width": 16,
                 "training.max_steps": 4, "training.eval_frequency": 2}
    train(REPO / "benchmarks" / "configs" / "ner_bilstm_kb_mentions.cfg", tmp_path / "out", overrides=overrides)
    trained = spacy.load(tmp_path / "out" / "model-best")
    assert trained.pipe_names == ["kb_gazetteer", "train_gazetteer", "bilstm_ner"]
    gaz = trained.get_pipe("train_gazetteer")
    assert gaz.names and gaz.doc_folds and set(gaz.doc_folds.values()) <= set(range(5))
    doc = trained("Barack Obama visited Paris .")
    assert doc.spans["train_names"] and doc.spans["kb_names"]


def write_drug_ner(path, bz2_pickle):
    """A tiny dictionary in the layout of drug-named-entity-recognition's `drug_ner_dictionary.pkl.bz2`."""
    data = {"drug_canonical_to_data": {"aspirin": {"name": "Aspirin", "mesh_id": "D001241"},
                                       "ibuprofen": {"name": "Ibuprofen", "drugbank_id": "DB01050"}},
            "drug_variant_to_canonical": {"acetylsalicylic acid": ["aspirin"], "advil": ["ibuprofen"]},
            "drug_variant_to_variant_data": {}}
    return bz2_pickle(path, data)


def test_spacy_train_with_the_chemical_gazetteer(tmp_path, kit, bz2_pickle):
    """configs/ner_bilstm_kb_chem.cfg: a disease KB, a chemical dictionary and an ontology, three flag sets."""
    write_train(kit, tmp_path)
    kb = tmp_path / "kb.tsv"
    kb.write_text("Q1\tParis\n")
    chem = write_drug_ner(tmp_path / "drug_ner_dictionary.pkl.bz2", bz2_pickle)
    ontology = tmp_path / "do.obo"
    ontology.write_text("format-version: 1.2\nontology: doid\n\n[Term]\nid: DOID:1\nname: Berlin syndrome\n")
    overrides = {"paths.train": str(tmp_path / "train.spacy"), "paths.dev": str(tmp_path / "train.spacy"),
                 "paths.kb": str(kb), "paths.kb_format": "tsv", "paths.chem_kb": str(chem),
                 "paths.do_kb": str(ontology),
                 "components.bilstm_ner.model.features.include_static_vectors": False,
                 "components.bilstm_ner.model.features.embed_width": 16,
                 "components.bilstm_ner.model.features.rows": [500, 100, 200, 50],
                 "components.bilstm_ner.model.hidden_width": 16,
                 "training.max_steps": 4, "training.eval_frequency": 2}
    train(REPO / "configs" / "ner_bilstm_kb_chem.cfg", tmp_path / "out", overrides=overrides)
    trained = spacy.load(tmp_path / "out" / "model-best")
    assert trained.pipe_names == ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "bilstm_ner"]
    doc = trained("Aspirin (acetylsalicylic acid) was given in Paris for Berlin syndrome.")
    assert [s.text for s in doc.spans["chem_names"]] == ["Aspirin", "acetylsalicylic acid"]
    assert [s.text for s in doc.spans["kb_names"]] == ["Paris"]
    assert [s.text for s in doc.spans["do_names"]] == ["Berlin syndrome"]


#: The shipped training configs (configs/) and the ones only benchmarks/ner_ablation.py reads (benchmarks/configs/).
SHIPPED = {"ner_bilstm.cfg": ["bilstm_ner"], "ner_bilstm_kb.cfg": ["kb_gazetteer", "bilstm_ner"],
           "ner_bilstm_kb_chem.cfg": ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "bilstm_ner"],
           "ner_bilstm_trf.cfg": ["transformer", "bilstm_ner"],
           "ner_bilstm_kb_trf.cfg": ["kb_gazetteer", "transformer", "bilstm_ner"],
           "ner_bilstm_kb_chem_trf.cfg": ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "transformer",
                                          "bilstm_ner"]}
BENCHMARK_ONLY = {"ner_bilstm_v1.cfg": ["bilstm_ner"],
                  "ner_bilstm_kb_mentions.cfg": ["kb_gazetteer", "train_gazetteer", "bilstm_ner"],
                  "ner_bilstm_names.cfg": ["places", "first_names", "surnames", "bilstm_ner"]}


@pytest.mark.parametrize("folder,pipelines", [("configs", SHIPPED), ("benchmarks/configs", BENCHMARK_ONLY)])
def test_every_config_is_valid(folder, pipelines):
    from spacy.util import load_model_from_config

    assert {p.name for p in (REPO / folder).glob("ner_*.cfg")} == set(pipelines)
    for name, pipe_names in pipelines.items():
        config = Config().from_disk(REPO / folder / name)
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        assert nlp.pipe_names == pipe_names


def test_shipped_configs_hold_their_measured_best_settings():
    """Each shipped config, used with no override, trains the tagger its header reports: a header that
    says what the config is for and what it scored (pointing to benchmarks/RESULTS.md), and the
    word-dropout settings in the GloVe BiLSTMs."""
    for name in SHIPPED:
        text = (REPO / "configs" / name).read_text()
        header = [line for line in text.splitlines() if line.startswith("#")]
        assert any("Scored:" in line for line in header) and "benchmarks/RESULTS.md" in " ".join(header), name
        config = Config().from_disk(REPO / "configs" / name, interpolate=False)
        assert config["training"]["max_epochs"] > 0 and config["training"]["max_steps"] == 0, name
        model = config["components"]["bilstm_ner"]["model"]
        if "transformer" not in config["nlp"]["pipeline"] or "kb_gazetteer" in config["nlp"]["pipeline"]:
            assert model["hidden_width"] == model["features"]["embed_width"] == 256, name
            assert model["features"]["word_dropout"] == 0.4 and config["training"]["dropout"] == 0.1, name
    for name in ("pipeline.cfg", "pipeline_bc5cdr.cfg"):
        header = (REPO / "configs" / name).read_text().split("[paths]")[0]
        assert "Scored:" in header and "benchmarks/RESULTS.md" in header, name


def test_init_vectors_cli(tmp_path):
    out = tmp_path / "vectors"
    result = CliRunner().invoke(app, ["init-vectors", str(out), "--limit", "500"])
    assert result.exit_code == 0, result.output
    nlp = spacy.load(out)
    assert nlp.vocab.vectors.shape == (500, 50)
    assert (nlp.vocab["the"].vector == nlp.vocab["The"].vector).all()
    result = CliRunner().invoke(app, ["init-vectors", str(out), "--limit", "0"])
    assert result.exit_code == 1 and "limit" in result.output
