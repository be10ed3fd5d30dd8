"""KB enrichment by cross-reference: Disease Ontology synonyms join the MEDIC concepts their
MESH/OMIM xrefs name, each merged name keeps its source, and xrefs to unknown concepts are
counted, not fatal (library, `build_index` and the `build-index --merge` command)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.merge import merge_by_xrefs, read_merge_kb
from spacy_el.kb.readers import read_medic

MEDIC = "D010009||Schwartz-Jampel Syndrome|SJS\nC567755|613097||Hereditary thing\nD003920||Diabetes Mellitus\n"
OBO = """format-version: 1.2
ontology: doid

[Term]
id: DOID:1
name: Schwartz-Jampel syndrome
synonym: "chondrodystrophic myotonia" EXACT []
synonym: "SJS" EXACT []
xref: MESH:D010009

[Term]
id: DOID:2
name: hereditary thing type 2
xref: OMIM:613097
xref: MESH:D999999

[Term]
id: DOID:3
name: unknown to MEDIC
xref: MESH:D888888

[Term]
id: DOID:4
name: no xrefs at all
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "medic.txt").write_text(MEDIC)
    (tmp_path / "doid.obo").write_text(OBO)
    return tmp_path


def test_synonyms_join_their_concepts_with_their_source_and_unknown_xrefs_are_counted(files):
    base = read_medic(files / "medic.txt")
    other, xrefs = read_merge_kb(files / "doid.obo", "obo-xrefs")
    merged, stats = merge_by_xrefs(base, other, xrefs, "doid.obo")
    added = [(cid, name, src) for cid, name, src in merged.rows() if src == "doid.obo"]
    assert added == [("MESH:D010009", "chondrodystrophic myotonia", "doid.obo"),
                     ("MESH:C567755|OMIM:613097", "hereditary thing type 2", "doid.obo")]
    assert list(merged.rows())[:len(base)] == list(base.rows())  # the base is kept, first, unchanged
    assert len(base) == 4
    assert (stats.n_names_added, stats.n_names_known) == (2, 2)  # "Schwartz-Jampel syndrome", "SJS" known
    assert (stats.n_terms, stats.n_terms_matched, stats.n_terms_without_xrefs) == (4, 2, 1)
    assert (stats.n_xrefs, stats.n_xrefs_unmatched) == (4, 2)
    assert stats.unmatched_examples == ["DOID:2 → MESH:D999999", "DOID:3 → MESH:D888888"]


def test_a_table_with_mesh_ids_merges_by_its_own_ids(files):
    (files / "extra.tsv").write_text("MESH:D003920\tdiabetes\nMESH:D777777\tnothing\n")
    other, xrefs = read_merge_kb(files / "extra.tsv", "tsv")
    merged, stats = merge_by_xrefs(read_medic(files / "medic.txt"), other, xrefs, "extra.tsv")
    assert merged.names[-1] == "diabetes" and merged.sources[-1] == "extra.tsv"
    assert stats.n_xrefs_unmatched == 1
    with pytest.raises(InputError, match="--merge-format"):
        read_merge_kb(files / "extra.tsv", "umls")


def test_build_index_command_merges_and_reports(files, tiny_bert_dir):
    from spacy_el.cli import app

    out = files / "index"
    result = CliRunner().invoke(app, ["build-index", str(files / "medic.txt"), str(tiny_bert_dir), str(out),
                                      "--format", "medic", "--merge", str(files / "doid.obo"), "--use-gpu", "false"])
    assert result.exit_code == 0, result.output
    assert "2 names added" in result.output and "2 of 4 cross-references matched no concept" in result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["build"]["merge"][0]["n_names_added"] == 2
    table = ConceptIndex.load(out, use_gpu=False).table
    assert ("MESH:D010009", "chondrodystrophic myotonia", "doid.obo") in set(table.rows())
