"""Smoke tests of the index/linking commands through typer's CliRunner (tiny BERT encoder)."""
from __future__ import annotations

import json

import pytest
import spacy
from typer.testing import CliRunner

from spacy_el.cli import app

KB = [("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"),
      ("MESH:D009369", "neoplasms"), ("MESH:D009369", "cancer"), ("MESH:D006331", "Heart Diseases")]
PUBTATOR = ("1|t|Diabetes and cancer.\n1|a|Heart diseases too.\n"
            "1\t0\t8\tDiabetes\tDisease\tD003920\n1\t13\t19\tcancer\tDisease\tD009369\n"
            "1\t21\t35\tHeart diseases\tDisease\tD006331\n\n")
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tiny_bert_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    kb = tmp / "kb.tsv"
    kb.write_text("".join(f"{c}\t{n}\n" for c, n in KB), encoding="utf-8")
    (tmp / "train.PubTator").write_text(PUBTATOR, encoding="utf-8")
    result = runner.invoke(app, ["build-index", str(kb), str(tiny_bert_dir), str(tmp / "index"), "--format", "tsv",
                                 "--add-mentions", str(tmp / "train.PubTator"), "--prior-from",
                                 str(tmp / "train.PubTator"), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    return tmp


def test_build_index_writes_an_index_with_alias_provenance(built):
    meta = json.loads((built / "index" / "meta.json").read_text())
    assert meta["alias_files"] == ["train.PubTator"] and meta["n_concepts"] == 3
    assert meta["sources"] == {"kb": 5, "train.PubTator": 1}  # mentions are lowercased: only "heart diseases" is new
    assert meta["build"]["kb"]["format"] == "tsv"
    assert meta["prior"]["n_mentions"] == 3 and (built / "index" / "prior.tsv").exists()


def test_build_index_stores_vectors_for_a_compressed_index(built, tiny_bert_dir, tmp_path):
    from spacy_el.kb.index import ConceptIndex

    result = runner.invoke(app, ["build-index", str(built / "kb.tsv"), str(tiny_bert_dir), str(tmp_path / "pq"),
                                 "--format", "tsv", "--index-type", "SQ4", "--store-vectors"])
    assert result.exit_code == 0, result.output
    index = ConceptIndex.load(tmp_path / "pq")
    assert len(index.vectors) == len(index.table) == 5 and index.meta["vectors"]["rescore_factor"] == 4
    assert (tmp_path / "pq" / "vectors.f16").stat().st_size == 5 * index.dim * 2


def test_build_index_reports_bad_rows_by_file_and_line(tiny_bert_dir, tmp_path):
    kb = tmp_path / "bad.tsv"
    kb.write_text("MESH:D003920\tdiabetes\nno tab on this line\n", encoding="utf-8")
    result = runner.invoke(app, ["build-index", str(kb), str(tiny_bert_dir), str(tmp_path / "out"), "--format", "tsv"])
    assert result.exit_code == 1 and "bad.tsv, line 2" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def pipeline_dir(built, tiny_bert_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "DISEASE", "pattern": p} for p in ("diabetes", "cancer")])
    from spacy_el.build import index_from_dir
    from spacy_el.sap.encoders import encoder_from_path

    linker = nlp.add_pipe("sap_linker", config={"top_k": 2, "threshold": 0.0})
    linker.initialize(encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(built / "index")))
    nlp.to_disk(built / "pipeline")
    return built / "pipeline"


def test_link_prints_jsonl_and_writes_html(pipeline_dir, tmp_path):
    result = runner.invoke(app, ["link", str(pipeline_dir), "Is diabetes a cancer?", "--html", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    ents = {e["text"]: e for e in record["entities"]}
    assert ents["diabetes"]["id"] == "MESH:D003920" and ents["diabetes"]["name"] == "diabetes"
    assert len(ents["cancer"]["candidates"]) == 2 and ents["cancer"]["candidates"][0]["source"] == "kb"
    page = (tmp_path / "x.html").read_text()
    assert "DISEASE · diabetes 1.00" in page and "<html" in page.lower()
    assert 'href="https://meshb.nlm.nih.gov/record/ui?ui=D003920"' in page  # the id links to its KB page
    assert page.count('<tr id="ent-0-') == len(record["entities"])  # the side table of candidates


def test_link_reads_stdin_and_prints_a_table(pipeline_dir):
    result = runner.invoke(app, ["link", str(pipeline_dir), "--format", "table"], input="cancer here\n\nno entity\n")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["doc", "entity", "label", "id"] and "MESH:D009369" in lines[1] and len(lines) == 2


def test_evaluate_linking_acc_and_end_to_end(built, pipeline_dir, tiny_bert_dir, tmp_path):
    result = runner.invoke(app, ["evaluate-linking", str(built / "train.PubTator"), "--encoder", str(tiny_bert_dir),
                                 "--index", str(built / "index"), "--pipeline", str(pipeline_dir),
                                 "--output", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["linking"]["n"] == 3 and scores["linking"]["n_missing_from_kb"] == 0
    # "Heart diseases" and "Diabetes" differ from KB names only by case; the random tiny encoder
    # is case-sensitive, so only the exact "cancer" is certain: Acc@5 covers all 3 concepts
    assert scores["linking"]["acc@5"] == 100.0
    assert 0.0 <= scores["pipeline"]["nel_micro_f"] <= 1.0 and "ents_f" in scores["pipeline"]


def test_query_loop_until_eof(built, tiny_bert_dir):
    result = runner.invoke(app, ["query", str(built / "index"), str(tiny_bert_dir), "--top-k", "2"],
                           input="cancer\n\n")
    assert result.exit_code == 0, result.output
    assert "MESH:D009369 cancer" in result.output


def test_evaluate_linking_prior_weight_override(built, tiny_bert_dir):
    args = ["evaluate-linking", str(built / "train.PubTator"), "--encoder", str(tiny_bert_dir),
            "--index", str(built / "index")]
    assert runner.invoke(app, args + ["--prior-weight", "0"]).exit_code == 0
    bad = runner.invoke(app, args + ["--prior-weight", "-1"])
    assert bad.exit_code != 0 and "prior_weight=-1" in bad.output


# ---------------------------------------------------------------------- bad inputs: one line each
def _one_line_error(result, *parts):
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output, result.output


def test_link_names_a_text_longer_than_max_length(pipeline_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Is diabetes a cancer?\n" + "diabetes " * 111_112 + "\n", encoding="utf-8")
    _one_line_error(runner.invoke(app, ["link", str(pipeline_dir), "--file", str(texts)]),
                    f"{texts}, line 2: a text of 1,000,007 characters", "--max-length")
    _one_line_error(runner.invoke(app, ["link", str(pipeline_dir), "--file", str(texts), "--max-length", "30"]),
                    f"{texts}, line 2", "max_length (30)")
    texts.write_text("Is diabetes a cancer?\n", encoding="utf-8")
    ok = runner.invoke(app, ["link", str(pipeline_dir), "--file", str(texts), "--max-length", "30"])
    assert ok.exit_code == 0 and "MESH:D003920" in ok.output


def test_link_html_into_a_directory_is_refused(pipeline_dir, tmp_path):
    _one_line_error(runner.invoke(app, ["link", str(pipeline_dir), "Is diabetes a cancer?", "--html", str(tmp_path)]),
                    f"{tmp_path}: is a directory")


def _damaged_copy(pipeline_dir, tmp_path):
    import shutil

    copy = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, copy)
    return copy, next(p.parent for p in copy.rglob("index.faiss"))


def test_a_truncated_index_column_is_named(pipeline_dir, tmp_path):
    copy, index = _damaged_copy(pipeline_dir, tmp_path)
    column = index / "columns" / "names.blob.npy"
    column.write_bytes(column.read_bytes()[:-10])
    _one_line_error(runner.invoke(app, ["link", str(copy), "Is diabetes a cancer?"]),
                    f"{column}: truncated or damaged", "rebuild the index")


def test_an_index_file_of_another_build_is_named(pipeline_dir, tmp_path):
    import faiss
    import numpy as np

    copy, index = _damaged_copy(pipeline_dir, tmp_path)
    other = faiss.read_index(str(index / "index.faiss"))
    other.add(np.ones((3, other.d), dtype="float32"))
    faiss.write_index(other, str(index / "index.faiss"))
    with pytest.raises(Exception, match=f"{index}: index.faiss holds 9 vectors but the table .* 6 rows"):
        spacy.load(copy)


def test_build_index_refuses_an_output_holding_other_files_unless_forced(built, tiny_bert_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["build-index", str(built / "kb.tsv"), str(tiny_bert_dir), str(out), "--format", "tsv"]
    _one_line_error(runner.invoke(app, args), f"{out}: exists and holds notes.txt but no meta.json", "--force")
    assert (out / "notes.txt").exists()
    assert runner.invoke(app, args + ["--force"]).exit_code == 0 and not (out / "notes.txt").exists()
    assert runner.invoke(app, args).exit_code == 0  # an index it wrote is rebuilt in place
