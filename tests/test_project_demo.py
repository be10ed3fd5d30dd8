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

from spacy_el.linker.alternatives import ALTERNATIVES_KEY

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "training", "corpus", "packages", "metrics", "display",
                              "__pycache__", "*.egg-info", "build", "dist")


def shrink_tagger(project: Path, steps: int = 40, width: int = 32) -> None:
    """The copy's configs/ner_bilstm_kb.cfg trains `steps` steps of a `width`-wide tagger: the workflows
    train the config at its own settings, so a reduced run edits the config, not the command line."""
    from thinc.api import Config

    path = project / "configs" / "ner_bilstm_kb.cfg"
    config = Config().from_disk(path, interpolate=False)
    config["training"].update({"max_epochs": 0, "max_steps": steps})
    model = config["components"]["bilstm_ner"]["model"]
    model["hidden_width"] = model["features"]["embed_width"] = width
    config.to_disk(path)


def run_project(project: Path, target: str, overrides: dict[str, str]) -> subprocess.CompletedProcess:
    """`spacy project run TARGET` (a workflow or one command) in the project copy, with `--vars` overrides."""
    cmd = [sys.executable, "-m", "spacy", "project", "run", target, str(project)]
    cmd += [arg for key, value in overrides.items() for arg in (f"--vars.{key}", value)]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True)


@pytest.mark.slow  # builds a wheel and installs it into a fresh venv: minutes; run with -m slow
def test_demo_workflow_reduced(tmp_path, tiny_bert_dir):
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=SKIP)
    shrink_tagger(project)
    # A 40-step tagger may find no entity in the sample (hence min_links 0); linking itself is
    # checked below on the assembled pipeline with a given span. The tiny BERT's 32 dimensions
    # cannot be split into PQ96's 96 sub-vectors, so its index is Flat.
    overrides = {"base_encoder": str(tiny_bert_dir), "pretrain_steps": "2", "min_links": "0", "index_type": "Flat",
                 "vectors_limit": "5000"}
    proc = run_project(project, "demo", overrides)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "OK: en_disease_el_demo installed" in proc.stdout
    linking = json.loads((project / "metrics" / "linking.json").read_text())["linking"]
    assert linking["n"] == 787 and linking["n_missing_from_kb"] < 50  # DO xrefs cover NCBI's MeSH/OMIM ids
    assert (project / "display" / "demo.html").read_text().startswith("<!DOCTYPE html>")
    nlp = spacy.load(project / "training" / "pipeline")
    assert nlp.pipe_names == ["kb_gazetteer", "bilstm_ner", "el_abbreviation_detector", "sap_linker"]
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


# A tiny BC5CDR-like corpus: four disease concepts of a tiny MEDIC, two chemicals, and abstracts
# of four sentences that each name a chemical and two diseases, enough for three document folds.
MEDIC = {"D003920": ["diabetes mellitus", "diabetes"], "D009369": ["neoplasms", "cancer", "tumor"],
         "D006331": ["heart diseases", "cardiopathy"], "D007674": ["kidney diseases", "nephropathy"]}
CHEMICALS = {"D002945": "cisplatin", "D007328": "insulin"}


def tiny_pubtator(n_docs: int, offset: int, chemicals: bool = True) -> str:
    """PubTator text (title = the first sentence), offsets counted while the text is written; without
    `chemicals`, an NCBI-disease-like corpus (diseases only)."""
    diseases = [(cid, name) for cid, names in MEDIC.items() for name in names]
    chemicals = list(CHEMICALS.items())
    out = []
    for i in range(n_docs):
        pmid, text, rows = str(1000 + offset + i), "", []
        for j in range(4):
            d, d2 = diseases[(i + j + offset) % len(diseases)], diseases[(i + 2 * j + 1) % len(diseases)]
            c = chemicals[(i + j) % len(chemicals)]
            sentence = (("Rats given ", (*c, "Chemical"), " developed ") if chemicals else ("Patients had ",)) + (
                (*d, "Disease"), " and ", (*d2, "Disease"), ". ")
            for part in sentence:
                if isinstance(part, tuple):
                    cid, name, kind = part
                    rows.append(f"{pmid}\t{len(text)}\t{len(text) + len(name)}\t{name}\t{kind}\t{cid}\n")
                    part = name
                text += part
        title, abstract = text.strip().split(". ", 1)
        out.append(f"{pmid}|t|{title}.\n{pmid}|a|{abstract}\n" + "".join(rows) + "\n")
    return "".join(out)


@pytest.mark.slow  # three taggers, four fine-tuned encoders and a reranker, each tiny: minutes
def test_bc5cdr_linked_workflow_reduced(tmp_path, tiny_bert_dir):
    """Every step of `bc5cdr-linked` but `chem-names` (a download: a local chemical list instead),
    on a tiny corpus and encoder: the assembled pipeline holds what the served one does and is scored."""
    import srsly

    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=SKIP)
    data = tmp_path / "data"
    data.mkdir()
    (data / "medic.txt").write_text("".join(f"{cid}||{'|'.join(names)}\n" for cid, names in MEDIC.items()))
    (data / "chem.tsv").write_text("".join(f"MESH:{cid}\t{name}\n" for cid, name in CHEMICALS.items()))
    (data / "CDR_TrainingSet.PubTator.txt").write_text(tiny_pubtator(6, 0))
    (data / "CDR_DevelopmentSet.PubTator.txt").write_text(tiny_pubtator(2, 6))
    overrides = {"base_encoder": str(tiny_bert_dir), "pretrain_steps": "2", "medic": str(data / "medic.txt"),
                 "chem_kb": str(data / "chem.tsv"), "bc5cdr_dir": str(data)}
    steps = srsly.read_yaml(REPO / "project.yml")["workflows"]["bc5cdr-linked"]
    for step in steps:
        if step == "chem-names":
            continue
        proc = run_project(project, step, overrides)
        assert proc.returncode == 0, f"{step}:\n" + proc.stdout[-4000:] + proc.stderr[-4000:]
    nlp = spacy.load(project / "training" / "bc5cdr_pipeline")
    assert nlp.pipe_names == ["kb_gazetteer", "chem_gazetteer", "do_gazetteer", "bilstm_ner", "kb_span_extender",
                              "el_abbreviation_detector", "sap_linker"]
    # set at training, kept by the ensemble: the span group the linker reads
    assert nlp.get_pipe("bilstm_ner").alternatives_key == ALTERNATIVES_KEY
    linker = nlp.get_pipe("sap_linker")
    assert linker.reranker is not None
    assert linker.cfg["labels"] == ["Disease"] and linker.cfg["threshold"] == 0.8
    doc = nlp.make_doc("Cisplatin induced nephropathy in rats.")
    doc.ents = [Span(doc, 0, 1, label="Chemical"), Span(doc, 2, 3, label="Disease")]
    doc = linker(doc)
    assert doc.ents[0].kb_id_ == "" and doc.ents[1]._.kb_candidates  # only Disease is linked, against MEDIC
    scores = json.loads((project / "metrics" / "bc5cdr_pipeline.json").read_text())
    assert {"doc_concepts", "spans", "linking"} <= set(scores["pipeline"])


def test_every_dependency_and_output_is_one_path():
    """weasel joins adjacent list items that are each a bare `${vars.x}` into one string, and the
    step then stops on a "missing dependency" that is two paths: project.yml must avoid that."""
    from weasel.util import load_project_config

    config = load_project_config(REPO)
    joined = [(cmd["name"], path) for cmd in config["commands"] for key in ("deps", "outputs")
              for path in cmd.get(key, []) if ", " in path]
    assert not joined
    steps = {name for steps in config["workflows"].values() for name in steps}
    assert steps <= {cmd["name"] for cmd in config["commands"]}


#: what a `spacy train` command of project.yml may set on the command line: paths, device, seed, output
#: (every other setting is the config's own, so each config used as shipped gives its measured result)
TRAIN_OPTIONS = ("--paths.", "--gpu-id", "--system.seed", "--output")


def test_train_commands_override_only_paths_device_and_seed():
    from weasel.util import load_project_config

    config = load_project_config(REPO)
    trains = [line for cmd in config["commands"] for line in cmd["script"] if "spacy train" in line]
    assert trains
    for line in trains:
        options = [word for word in line.split() if word.startswith("--")]
        assert all(o.startswith(TRAIN_OPTIONS) for o in options), line


def test_medic_workflow_is_valid():
    """`spacy project run medic`: every step a command, its deps and outputs single paths, MEDIC read as
    MEDIC from the declared asset, the tagger trained with MEDIC as its gazetteer, the NCBI train
    mentions as the index's aliases and prior, and the pipeline scored end to end and packaged."""
    from weasel.util import load_project_config

    config = load_project_config(REPO)
    commands = {cmd["name"]: cmd for cmd in config["commands"]}
    steps = config["workflows"]["medic"]
    assert set(steps) <= set(commands)
    medic = config["vars"]["medic"]
    assert medic in {asset["dest"] for asset in config["assets"]}
    for step in steps:
        for key in ("deps", "outputs"):
            for path in commands[step].get(key, []):
                assert ", " not in path and "${" not in path, (step, path)
    script = {step: " ".join(commands[step]["script"]) for step in steps}
    assert f"--paths.kb {medic} --paths.kb_format medic" in script["train-ner-medic"]
    alias = config["vars"]["alias_corpus"]
    assert f"build-index {medic} " in script["build-index-medic"] and "--format medic" in script["build-index-medic"]
    assert f"--add-mentions {alias} --prior-from {alias}" in script["build-index-medic"]
    assert f"make-pairs {medic} " in script["make-pairs-medic"]
    assert "--pipeline training/medic/pipeline --label Disease" in script["evaluate-medic"]  # NCBI's types: one label
    assert "spacy package training/medic/pipeline" in script["package-medic"]
    produced = {path for step in steps for path in commands[step].get("outputs", [])}
    needed = {path for step in steps for path in commands[step].get("deps", [])}
    assert needed - produced <= {medic, alias, config["vars"]["eval_corpus"], config["vars"]["sample_text"],
                                 config["vars"]["ner_config"], "configs/pipeline.cfg", "scripts/install_check.py",
                                 f"{config['vars']['ner_data']}/NCBItrainset_corpus.txt",
                                 f"{config['vars']['ner_data']}/NCBIdevelopset_corpus.txt"}


@pytest.mark.slow  # a tagger, an encoder, an index, a wheel installed into a fresh venv: minutes
def test_medic_workflow_reduced(tmp_path, tiny_bert_dir):
    """Every step of `medic` on a tiny made-up MEDIC and NCBI-like corpus, with a tiny encoder: the
    pipeline links to MEDIC's ids, is scored end to end, and installs as a wheel."""
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=SKIP)
    shrink_tagger(project)
    data = tmp_path / "data"
    data.mkdir()
    (data / "medic.txt").write_text("".join(f"{cid}||{'|'.join(names)}\n" for cid, names in MEDIC.items()))
    (data / "NCBItrainset_corpus.txt").write_text(tiny_pubtator(6, 0, chemicals=False))
    (data / "NCBIdevelopset_corpus.txt").write_text(tiny_pubtator(2, 6, chemicals=False))
    overrides = {"base_encoder": str(tiny_bert_dir), "pretrain_steps": "2", "medic": str(data / "medic.txt"),
                 "ner_data": str(data), "alias_corpus": str(data / "NCBItrainset_corpus.txt"),
                 "eval_corpus": str(data / "NCBIdevelopset_corpus.txt"), "index_type": "Flat", "min_links": "0",
                 "vectors_limit": "5000"}
    proc = run_project(project, "medic", overrides)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "OK: en_disease_el_medic installed" in proc.stdout
    nlp = spacy.load(project / "training" / "medic" / "pipeline")
    assert nlp.pipe_names == ["kb_gazetteer", "bilstm_ner", "el_abbreviation_detector", "sap_linker"]
    doc = nlp("Patients had cardiopathy and diabetes.")
    assert {s.text for s in doc.spans["kb_names"]} == {"cardiopathy", "diabetes"}  # MEDIC is the gazetteer
    doc = nlp.make_doc("Patients had nephropathy.")
    doc.ents = [Span(doc, 2, 3, label="Disease")]
    doc = nlp.get_pipe("sap_linker")(doc)
    assert doc.ents[0]._.kb_candidates[0].concept_id.startswith("MESH:D")
    ner = json.loads((project / "metrics" / "medic_ner.json").read_text())
    assert "ents_f" in ner
    scores = json.loads((project / "metrics" / "medic_pipeline.json").read_text())
    assert {"doc_concepts", "spans", "linking"} <= set(scores["pipeline"])
    assert scores["pipeline"]["spans"]["f"] > 0  # the gold mentions' NCBI types are read as the tagger's label
    assert list((project / "packages" / "en_disease_el_medic-0.1.0" / "dist").glob("*.whl"))
