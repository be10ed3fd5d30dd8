"""`spacy train` with the bilstm_ner config (in-process, a few steps) and the init-vectors command."""
from __future__ import annotations

from pathlib import Path

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
    train(REPO / "configs" / "ner_bilstm_kb_mentions.cfg", tmp_path / "out", overrides=overrides)
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


def test_small_config_is_valid():
    from spacy.util import load_model_from_config

    pipelines = {"ner_bilstm.cfg": ["bilstm_ner"], "ner_bilstm_small.cfg": ["bilstm_ner"],
                 "ner_bilstm_v1.cfg": ["bilstm_ner"], "ner_bilstm_kb.cfg": ["kb_gazetteer", "bilstm_ner"],
                 "ner_bilstm_kb_mentions.cfg": ["kb_gazetteer", "train_gazetteer", "bilstm_ner"],
                 "ner_bilstm_kb_chem.cfg": ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "bilstm_ner"],
                 "ner_bilstm_names.cfg": ["places", "first_names", "surnames", "bilstm_ner"],
                 "ner_bilstm_trf.cfg": ["transformer", "bilstm_ner"],
                 "ner_bilstm_kb_trf.cfg": ["kb_gazetteer", "transformer", "bilstm_ner"],
                 "ner_bilstm_kb_chem_trf.cfg": ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "transformer",
                                                "bilstm_ner"]}
    assert {p.name for p in (REPO / "configs").glob("ner_*.cfg")} == set(pipelines)
    for name, pipe_names in pipelines.items():
        config = Config().from_disk(REPO / "configs" / name)
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        assert nlp.pipe_names == pipe_names


def test_init_vectors_cli(tmp_path):
    out = tmp_path / "vectors"
    result = CliRunner().invoke(app, ["init-vectors", str(out), "--limit", "500"])
    assert result.exit_code == 0, result.output
    nlp = spacy.load(out)
    assert nlp.vocab.vectors.shape == (500, 50)
    assert (nlp.vocab["the"].vector == nlp.vocab["The"].vector).all()
    result = CliRunner().invoke(app, ["init-vectors", str(out), "--limit", "0"])
    assert result.exit_code == 1 and "limit" in result.output
