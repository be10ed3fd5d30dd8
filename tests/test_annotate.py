"""`spacy-el annotate`: the local and Ray engines write exactly the entities of `nlp.pipe`,
shards are resumable (a run killed after its first shard, rerun, writes each document once),
every input format, bad rows, refused resumes, PubTator output and the CLI."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from typer.testing import CliRunner

import spacy_el.annotate.shards as shards_mod
from spacy_el.annotate import annotate, entity_rows, read_entities
from spacy_el.corpora.documents import plan_splits, read_documents, read_records, read_split
from spacy_el.build import index_from_dir
from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.encoders import encoder_from_path

NAMES = [("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"), ("MESH:D009369", "cancer"),
         ("MESH:D009369", "neoplasms"), ("MESH:D006331", "cardiac disease"), ("OMIM:175100", "polyposis")]
PATTERNS = [{"label": "DISEASE", "pattern": p} for p in ["diabetes", "cancer", "cardiac disease", "heart attack",
                                                          "polyposis", "neoplasms"]]
TEXTS = ["Patients with diabetes and cancer.", "", "No entities here at all.",
         "A heart attack, cardiac disease and polyposis.", "neoplasms " * 40, "cancer", "Diabetes? diabetes!"]


@pytest.fixture(scope="module")
def pipeline_dir(tiny_bert_dir, tmp_path_factory):
    """entity_ruler + sap_linker over a tiny KB with the tiny BERT, saved as a pipeline directory."""
    from spacy_el.sap.encoder import SapEncoder

    root = tmp_path_factory.mktemp("annotate")
    encoder = SapEncoder.load(tiny_bert_dir, device="cpu")
    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(root / "index")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    nlp.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 3}).initialize(
        encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(root / "index")))
    nlp.to_disk(root / "pipeline")
    return root / "pipeline"


@pytest.fixture(scope="module")
def expected(pipeline_dir):
    nlp = spacy.load(pipeline_dir)
    return [row for i, doc in enumerate(nlp.pipe(TEXTS)) for row in entity_rows(f"d{i}", doc)]


def write_jsonl(path, texts=TEXTS):
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def rows_of(output):
    return read_entities(output).to_pylist()


def close(a, b):
    """Rows equal up to float32 storage of the scores."""
    def norm(rows):
        return [{**r, "score": None if r["score"] is None else round(r["score"], 3),
                 "candidates": [{**c, "score": round(c["score"], 3)} for c in r["candidates"]]} for r in rows]
    return norm(a) == norm(b)


def test_local_engine_writes_the_entities_of_nlp_pipe(pipeline_dir, expected, tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl")
    stats = annotate(pipeline_dir, src, tmp_path / "out", shard_size=3, show_progress=False, pubtator=True)
    assert (stats.n_docs, stats.n_shards_written, stats.n_entities) == (len(TEXTS), 3, len(expected))
    assert expected and close(rows_of(tmp_path / "out"), expected)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
        f"part-0000{i}.{ext}" for i in range(3) for ext in ("parquet", "pubtator")]
    meta = pq.read_schema(tmp_path / "out" / "part-00001.parquet").metadata
    assert meta[b"spacy_el.n_docs"] == b"3"
    pubtator = (tmp_path / "out" / "part-00000.pubtator").read_text()
    assert "d0|t|Patients with diabetes and cancer." in pubtator and "d0\t14\t22\tdiabetes\tDISEASE\t" in pubtator
    # n_process=2 (spaCy's forked workers) writes the same rows
    annotate(pipeline_dir, src, tmp_path / "out2", shard_size=2, n_process=2, batch_size=2, show_progress=False)
    assert close(rows_of(tmp_path / "out2"), expected)


def test_a_killed_run_resumes_and_writes_each_document_once(pipeline_dir, expected, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl")
    real = shards_mod._write_shard
    calls = []

    def dies_after_first(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(shards_mod, "_write_shard", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False)
    assert [p.name for p in (tmp_path / "out").glob("*.parquet")] == ["part-00000.parquet"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # nothing half-written
    monkeypatch.setattr(shards_mod, "_write_shard", real)
    stats = annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False)
    assert (stats.n_shards_skipped, stats.n_shards_written, stats.n_docs) == (1, 3, len(TEXTS) - 2)
    rows = rows_of(tmp_path / "out")
    assert close(rows, expected)  # each entity once, in document order
    n_docs = sum(int(pq.read_schema(p).metadata[b"spacy_el.n_docs"]) for p in (tmp_path / "out").glob("*.parquet"))
    assert n_docs == len(TEXTS)
    # a third run has nothing left to do
    assert annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False).n_docs == 0
    with pytest.raises(InputError, match="shard_size=2"):  # shards would not line up
        annotate(pipeline_dir, src, tmp_path / "out", shard_size=5, show_progress=False)
    manifest = tmp_path / "out" / "_annotate.json"  # an output of the spacy-el that numbered documents only
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "shards_of"}))
    with pytest.raises(InputError, match="older spacy-el"):
        annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False)


def test_bad_rows_name_file_and_line_or_are_skipped_and_counted(pipeline_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": "a", "text": "cancer"}\n\n{"id": "b", "text": 3}\nnot json\n{"id": "c", "text": "diabetes"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 3: \"text\" must be a string.*--skip-bad"):
        list(read_documents(src))
    stats = annotate(pipeline_dir, src, tmp_path / "out", skip_bad=True, show_progress=False)
    assert (stats.n_bad_rows, stats.n_docs) == (2, 2) and "line 4: not valid JSON" in stats.bad_rows[1]
    assert [r["doc_id"] for r in rows_of(tmp_path / "out")] == ["a", "c"]
    with pytest.raises(InputError, match="cannot tell the input format"):
        list(read_documents(write_jsonl(tmp_path / "docs.data")))


def test_splits_read_the_records_of_the_whole_file_with_their_lines(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"id": "a", "text": "cancer"}\n\n{"id": "b", "text": 3}\nnot json\n{"id": "c", "text": "x"}\n' * 3)
    pubtator = tmp_path / "docs.PubTator.txt"
    pubtator.write_text("".join(f"{i}|t|Title {i}\n{i}|a|Abstract {i}.\n{i}\t0\t5\tTitle\tDisease\tD1\n\n"
                                for i in range(7)))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(10)], "text": ["t"] * 10}), parquet, row_group_size=3)
    for path, n in ((jsonl, 15), (pubtator, 7), (parquet, 10)):
        whole = list(read_records(path))
        splits = plan_splits(path, target_bytes=40)
        assert len(whole) == n and len(splits) > 2 and sum(s.n_records for s in splits) == n
        assert [r for s in splits for r in read_split(s)] == whole
    lines = [item for _, item in read_records(jsonl) if isinstance(item, str)]
    assert [m.split(": ")[0].split(", ")[1] for m in lines] == ["line 3", "line 4", "line 8", "line 9", "line 13", "line 14"]
    assert [d.id for _, d in read_records(pubtator)] == [str(i) for i in range(7)]


def test_shards_are_records_so_blank_and_bad_lines_keep_their_place(pipeline_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": "a", "text": "cancer"}\n\n\nnot json\n{"id": "c", "text": "diabetes"}\n')
    stats = annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, skip_bad=True, show_progress=False)
    # records 0-1, 2-3 (a blank line and a bad one: an empty shard) and 4
    assert (stats.n_shards_written, stats.n_docs, stats.n_bad_rows) == (3, 2, 1)
    assert [int(pq.read_schema(p).metadata[b"spacy_el.n_docs"]) for p in sorted((tmp_path / "out").glob("*.parquet"))] \
        == [1, 0, 1]


def test_parquet_and_pubtator_inputs(pipeline_dir, tmp_path):
    table = pa.table({"id": ["p1", "p2", None], "text": ["cancer and diabetes", "nothing", "cancer"]})
    pq.write_table(table, tmp_path / "docs.parquet")
    with pytest.raises(InputError, match=r"docs.parquet, row 3: no \"id\""):
        list(read_documents(tmp_path / "docs.parquet"))
    stats = annotate(pipeline_dir, tmp_path / "docs.parquet", tmp_path / "out", skip_bad=True, show_progress=False)
    assert stats.n_bad_rows == 1 and [r["text"] for r in rows_of(tmp_path / "out")] == ["cancer", "diabetes"]
    src = tmp_path / "docs.PubTator.txt"
    src.write_text("123|t|Diabetes and cancer\n123|a|A cardiac disease.\n123\t0\t8\tDiabetes\tDisease\tD003920\n\n")
    annotate(pipeline_dir, src, tmp_path / "pt", pubtator=True, show_progress=False)
    assert [(r["doc_id"], r["start"], r["text"]) for r in rows_of(tmp_path / "pt")] == [
        ("123", 13, "cancer"), ("123", 22, "cardiac disease")]
    assert (tmp_path / "pt" / "part-00000.pubtator").read_text().startswith(
        "123|t|Diabetes and cancer\n123|a|A cardiac disease.\n123\t13\t19\tcancer\tDISEASE\t")


def test_cli_annotates_and_reports(pipeline_dir, tmp_path):
    from spacy_el.cli import app

    src = write_jsonl(tmp_path / "docs.jsonl")
    result = CliRunner().invoke(app, ["annotate", str(pipeline_dir), str(src), str(tmp_path / "out"),
                                      "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert f"Annotated {len(TEXTS)} documents" in result.output and "2 shards" in result.output
    result = CliRunner().invoke(app, ["annotate", str(pipeline_dir), str(tmp_path / "none.jsonl"),
                                      str(tmp_path / "out3")])
    assert result.exit_code == 1 and "none.jsonl: input file not found" in result.output
    assert not (tmp_path / "out3").exists()  # nothing written for a run that cannot start


def test_ray_engine_without_ray_says_how_to_install_it(pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"pip install 'spacy-el\[ray\]'"):
        annotate(pipeline_dir, write_jsonl(tmp_path / "docs.jsonl"), tmp_path / "out", engine="ray",
                 show_progress=False)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow  # starting Ray and two actors takes about a minute on 2 cores
def test_ray_engine_writes_the_entities_of_nlp_pipe_and_resumes(ray_local, pipeline_dir, expected, tmp_path,
                                                                monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl")
    real, calls = shards_mod._write_shard, []

    def dies_after_first(*args, **kwargs):
        if calls:
            raise RuntimeError("killed")
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(shards_mod, "_write_shard", dies_after_first)
    with pytest.raises(RuntimeError, match="killed"):
        annotate(pipeline_dir, src, tmp_path / "out", engine="ray", workers=2, batch_size=2, shard_size=2,
                 show_progress=False)
    monkeypatch.setattr(shards_mod, "_write_shard", real)
    stats = annotate(pipeline_dir, src, tmp_path / "out", engine="ray", workers=2, batch_size=2, shard_size=2,
                     show_progress=False)
    assert stats.n_shards_skipped == 1 and stats.n_docs + 2 == len(TEXTS)
    assert close(rows_of(tmp_path / "out"), expected)
    # Ray Data reads the input: one read task per split of ~100 bytes (three documents or so)
    local = tmp_path / "local"
    annotate(pipeline_dir, src, local, shard_size=3, show_progress=False, pubtator=True)
    stats = annotate(pipeline_dir, src, tmp_path / "split", engine="ray", workers=2, batch_size=2, shard_size=3,
                     show_progress=False, pubtator=True, split_bytes=100)
    assert stats.n_docs == len(TEXTS) and close(rows_of(tmp_path / "split"), expected)
    for part in sorted(local.glob("part-*")):
        assert (tmp_path / "split" / part.name).exists()
    assert (local / "part-00000.pubtator").read_text() == (tmp_path / "split" / "part-00000.pubtator").read_text()
    # a bad row: the read task's error names file and line; with skip_bad it is counted
    bad = tmp_path / "bad.jsonl"
    bad.write_text(src.read_text() + "not json\n" + src.read_text())
    with pytest.raises(InputError, match=r"bad.jsonl, line 8: not valid JSON.*--skip-bad"):
        annotate(pipeline_dir, bad, tmp_path / "bad", engine="ray", workers=1, shard_size=3, show_progress=False,
                 split_bytes=100)
    stats = annotate(pipeline_dir, bad, tmp_path / "skipped", engine="ray", workers=1, shard_size=3,
                     show_progress=False, split_bytes=100, skip_bad=True)
    assert (stats.n_bad_rows, stats.n_docs) == (1, 2 * len(TEXTS)) and "line 8" in stats.bad_rows[0]


# ---------------------------------------------------------------------- bad inputs and damaged outputs
def test_a_text_longer_than_max_length_is_named_or_skipped(pipeline_dir, tmp_path):
    from spacy_el.cli import app

    src = write_jsonl(tmp_path / "docs.jsonl", ["cancer", "diabetes " * 111_112, "diabetes"])
    result = CliRunner().invoke(app, ["annotate", str(pipeline_dir), str(src), str(tmp_path / "out")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{src}, line 2: a text of 1,000,008 characters, longer than the pipeline's max_length" in result.output
    assert "--skip-bad" in result.output
    stats = annotate(pipeline_dir, src, tmp_path / "out", skip_bad=True, show_progress=False)
    assert (stats.n_bad_rows, stats.n_docs) == (1, 2) and "line 2" in stats.bad_rows[0]
    assert [r["doc_id"] for r in rows_of(tmp_path / "out")] == ["d0", "d2"]


def test_a_run_that_wrote_no_shard_does_not_bind_the_next_ones_settings(pipeline_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": "a", "text": "cancer"}\nnot json\n')
    with pytest.raises(InputError, match="--skip-bad"):
        annotate(pipeline_dir, src, tmp_path / "out", show_progress=False)
    stats = annotate(pipeline_dir, src, tmp_path / "out", skip_bad=True, show_progress=False)  # as advised
    assert (stats.n_docs, stats.n_bad_rows) == (1, 1)
    with pytest.raises(InputError, match="skip_bad=True"):  # once a shard is written, its settings hold
        annotate(pipeline_dir, src, tmp_path / "out", show_progress=False)


def test_a_shard_cut_short_on_disk_is_named_and_written_again(pipeline_dir, expected, tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl")
    annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False)
    shard = tmp_path / "out" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(InputError, match=f"{shard}: not a whole Parquet shard"):
        read_entities(tmp_path / "out")
    stats = annotate(pipeline_dir, src, tmp_path / "out", shard_size=2, show_progress=False)
    assert stats.damaged == [str(shard)] and (stats.n_shards_written, stats.n_shards_skipped) == (1, 3)
    assert close(rows_of(tmp_path / "out"), expected)


def test_an_output_that_is_a_file_is_refused(pipeline_dir, tmp_path):
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(InputError, match="out: is a file; give a directory for OUTPUT"):
        annotate(pipeline_dir, write_jsonl(tmp_path / "docs.jsonl"), tmp_path / "out", show_progress=False)


def test_the_documented_way_to_read_entities_needs_no_pandas(pipeline_dir, tmp_path, monkeypatch):
    import inspect
    import textwrap

    doc = inspect.getdoc(read_entities)
    assert "::" in doc, "read_entities documents how to read the entities"
    example = textwrap.dedent(doc.split("::", 1)[1]).replace('"out/"', repr(str(tmp_path / "out")))
    annotate(pipeline_dir, write_jsonl(tmp_path / "docs.jsonl"), tmp_path / "out", show_progress=False)
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # as if pandas were not installed
    scope = {"read_entities": read_entities}
    exec(example, scope)
    assert scope["rows"] and scope["per_concept"].num_rows == 4  # the four concepts the texts name
