"""Type filters inside the FAISS search (top_k allowed concepts for every index type, stored
with the index, unknown names refused) and updating a built index (add/remove, atomic,
table/prior/types/meta consistent, clear errors and the rebuild path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.types import ConceptTypes
from spacy_el.kb.update import can_remove, update_index

DISEASES = [f"MESH:D{i:06d}" for i in range(40)]
CHEMICALS = [f"MESH:C{i:06d}" for i in range(6)]


def table_and_vectors(dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, vecs = [], []
    for cid in DISEASES + CHEMICALS:
        base = rng.normal(size=dim)
        for j in range(3):
            rows.append((cid, f"{cid} name {j}"))
            vecs.append(base + 0.1 * rng.normal(size=dim))
    return ConceptTable.from_rows(rows), np.array(vecs, dtype="float32")


def types() -> ConceptTypes:
    return ConceptTypes({**{c: ["T047", "DISO"] for c in DISEASES}, **{c: ["T121", "CHEM"] for c in CHEMICALS}},
                        {"T047": "Disease or Syndrome", "T121": "Pharmacologic Substance"})


@pytest.mark.parametrize("index_type", ["Flat", "HNSW16", "IVF4,Flat", "PCA8,Flat", "IVF4,PQ4x4,RFlat", "SQ8"])
def test_type_filter_returns_top_k_allowed_concepts_for_every_index_type(index_type):
    table, vectors = table_and_vectors()
    index = ConceptIndex.from_vectors(table, vectors, index_type, use_gpu=False)
    index.types = types()
    allowed = index.allowed_rows(["CHEM"])
    queries = vectors[::7]  # mostly disease names: the chemicals are far from them
    found = index.search(queries, k=5, allowed=allowed)
    assert all(len(c) == 5 for c in found)
    assert all(c.concept_id in CHEMICALS for cands in found for c in cands)
    # more than exist: all 6 chemicals, never a disease
    assert all(sorted(c.concept_id for c in cands) == CHEMICALS for cands in index.search(queries, k=10, allowed=allowed))
    if index_type == "Flat":  # exact: the same as ranking only the allowed concepts
        only = ConceptIndex.from_vectors(ConceptTable.from_rows(r for r, a in zip(table.rows(), allowed) if a),
                                         vectors[allowed], "Flat", use_gpu=False)
        assert [[c.concept_id for c in x] for x in found] == [[c.concept_id for c in x] for x in only.search(queries, 5)]


def test_types_are_saved_and_loaded_with_the_index_and_unknown_names_refused(tmp_path):
    table, vectors = table_and_vectors()
    index = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    index.types = types()
    index.save(tmp_path / "idx")
    back = ConceptIndex.load(tmp_path / "idx")
    assert back.types.get("MESH:C000001") == ("T121", "CHEM") and back.types.names["T047"] == "Disease or Syndrome"
    with pytest.raises(InputError, match=r"type_filters.Chemical: unknown type name\(s\) 'CHEMICAL'.*CHEM"):
        back.allowed_rows(["CHEMICAL"], "type_filters.Chemical")
    bare = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    with pytest.raises(InputError, match="has no semantic types; attach them with `spacy-el index-types"):
        bare.allowed_rows(["CHEM"])


def test_types_from_mrsty_and_a_disease_ontology_obo(tmp_path):
    from spacy_el.umls import concept_types_from_mrsty

    REPO = Path(__file__).resolve().parents[2]
    umls = concept_types_from_mrsty(REPO / "tests/fixtures/umls/medkit_2021AB/MRSTY.RRF",
                                    concept_ids=["UMLS:C0011849", "UMLS:C9999999"])
    assert umls.get("UMLS:C0011849") == ("T047", "DISO") and "UMLS:C9999999" not in umls
    obo = tmp_path / "do.obo"
    obo.write_text("format-version: 1.2\nontology: doid\n\n"
                   "[Term]\nid: DOID:4\nname: disease\n\n"
                   "[Term]\nid: DOID:1287\nname: cardiovascular system disease\nis_a: DOID:4\n\n"
                   "[Term]\nid: DOID:114\nname: heart disease\nis_a: DOID:1287\nxref: MESH:D006331\n")
    do = ConceptTypes.from_obo(obo)
    assert set(do.get("DOID:114")) == {"DOID:114", "DOID:1287", "DOID:4"}
    medic = ConceptTypes.from_obo(obo, concept_ids=["MESH:D006331", "MESH:D000001"])
    assert set(medic.get("MESH:D006331")) == {"DOID:114", "DOID:1287", "DOID:4"} and "MESH:D000001" not in medic


# ---------------------------------------------------------------------- updates
@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    from spacy_el.sap.encoder import SapEncoder

    return SapEncoder.load(tiny_bert_dir, device="cpu")


NAMES = [("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"), ("MESH:D009369", "cancer"),
         ("MESH:D006331", "heart diseases"), ("OMIM:175100|MESH:D011125", "adenomatous polyposis coli")]


def built(encoder, path, index_type="Flat"):
    index = ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, index_type, use_gpu=False)
    index.set_prior({"MESH:D009369": 5, "MESH:D003920": 2})
    index.types = ConceptTypes({cid: ["DISO"] for cid, _ in NAMES})
    index.save(path)
    return path


def test_add_and_remove_keep_table_prior_types_and_meta_consistent(encoder, tmp_path):
    path = built(encoder, tmp_path / "idx")
    add = ConceptTable.from_rows([("MESH:D001943", "breast cancer"), ("MESH:D003920", "sugar diabetes")])
    out = update_index(path, add=add, remove=["MESH:D009369", "OMIM:175100"], encoder=encoder)
    assert out["removed_concepts"] == 2 and out["removed_names"] == 2 and out["added_names"] == 2
    index = ConceptIndex.load(path, encoder)
    assert index.cpu_index.ntotal == len(index.table) == index.meta["n_names"] == 5
    assert set(index.table.ids) == {"MESH:D003920", "MESH:D006331", "MESH:D001943"}
    assert index.prior == {"MESH:D003920": 2} and "MESH:D009369" not in index.types
    assert index.meta["updates"][-1]["added_names"] == 2
    # every remaining name is still found as itself: rows and table stayed aligned
    fresh = encoder.embed(list(index.table.names))
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    assert np.allclose(index.stored_vectors(range(len(index.table))), fresh, atol=1e-4)


def test_ids_not_in_the_index_are_refused_and_nothing_changes(encoder, tmp_path):
    path = built(encoder, tmp_path / "idx")
    before = list(ConceptIndex.load(path, use_gpu=False).table.rows())
    with pytest.raises(InputError, match="--remove: MESH:D999999 not in the index"):
        update_index(path, remove=["MESH:D009369", "MESH:D999999"])
    assert list(ConceptIndex.load(path, use_gpu=False).table.rows()) == before


def test_index_types_that_cannot_remove_say_so_and_rebuild_on_request(encoder, tmp_path):
    import faiss

    assert can_remove(faiss.index_factory(8, "Flat")) and can_remove(faiss.index_factory(8, "PCA4,SQ8"))
    assert not can_remove(faiss.index_factory(8, "HNSW8")) and not can_remove(faiss.index_factory(8, "IVF2,Flat"))
    path = built(encoder, tmp_path / "hnsw", "HNSW8")
    with pytest.raises(InputError, match="cannot remove vectors in place .*--rebuild --encoder"):
        update_index(path, remove=["MESH:D009369"])
    out = update_index(path, remove=["MESH:D009369"], encoder=encoder, rebuild=True)
    index = ConceptIndex.load(path, encoder)
    assert out["removed_names"] == 1 and len(index.table) == index.cpu_index.ntotal == 4
    assert index.meta["index_type"] == "HNSW8" and "MESH:D009369" not in index.prior


def test_update_index_cli(encoder, tiny_bert_dir, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = built(encoder, tmp_path / "idx")
    add = tmp_path / "add.tsv"
    add.write_text("MESH:D001943\tbreast cancer\n")
    result = CliRunner().invoke(app, ["update-index", str(path), "--add", str(add), "--remove", "MESH:D009369",
                                      "--encoder", str(tiny_bert_dir)])
    assert result.exit_code == 0, result.output
    assert "Removed 1 concepts (1 names), added 1 names" in result.output
    bad = CliRunner().invoke(app, ["update-index", str(path), "--add", str(add)])
    assert bad.exit_code == 1 and "needs the encoder" in bad.output


def test_concurrent_updates_of_one_index_lose_nothing(encoder, tiny_bert_dir, tmp_path):
    """Two real `update-index --add` processes on one index: the second waits for the first."""
    import os
    import subprocess
    import sys

    path = built(encoder, tmp_path / "idx")
    adds = []
    for run in ("a", "b"):
        add = tmp_path / f"add_{run}.tsv"
        add.write_text("".join(f"MESH:D90{i:04d}\tzorblax {run} {i}\n" for i in range(60)), encoding="utf-8")
        adds.append(add)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-m", "spacy_el", "update-index", str(path), "--add", str(add),
                               "--encoder", str(tiny_bert_dir), "--batch-size", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for add in adds]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    names = set(ConceptIndex.load(path, encoder).table.names)
    for run in ("a", "b"):
        assert {f"zorblax {run} {i}" for i in range(60)} <= names, f"run {run}'s names were lost"
    assert len(names) == len(NAMES) + 120


def test_index_types_matches_ids_as_corpora_spell_them_and_names_unmatched_rows(encoder, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = built(encoder, tmp_path / "idx")
    tsv = tmp_path / "types.tsv"
    tsv.write_text("MESH:D011125\tGENETIC\nD003920\tMETABOLIC\nMESH:D999999\tNONE\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["index-types", str(path), "--tsv", str(tsv)])
    assert result.exit_code == 0, result.output
    types = ConceptIndex.load(path).types
    assert types.get("OMIM:175100|MESH:D011125") == ("GENETIC",) and types.get("MESH:D003920") == ("METABOLIC",)
    assert "1 rows match no concept" in result.output and "line 3: MESH:D999999" in result.output


def test_an_id_shifted_by_a_tab_is_refused_by_update_and_build(encoder, tiny_bert_dir, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app
    from spacy_el.ids import id_problem
    from spacy_el.kb.readers import read_tsv

    assert id_problem("MESH:D003920|OMIM:175100") is None and id_problem("C0011849") is None
    assert id_problem("DRUGNER:acetic acid") is None
    assert "no local part" in id_problem("MESH:") and "no prefix" in id_problem(":D1") and id_problem("D1 x")
    path = built(encoder, tmp_path / "idx")
    before = list(ConceptIndex.load(path, use_gpu=False).table.rows())
    add = tmp_path / "add.tsv"
    add.write_text("MESH:D900001\tzorblax\nMESH:\tD900002\tname\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["update-index", str(path), "--add", str(add), "--encoder", str(tiny_bert_dir)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"{add}, line 2: concept id 'MESH:' has no local part" in result.output
    assert list(ConceptIndex.load(path, use_gpu=False).table.rows()) == before
    with pytest.raises(InputError, match="add.tsv, line 2: concept id 'MESH:'"):
        read_tsv(add)
