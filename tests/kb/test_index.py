"""ConceptIndex: exact search equals brute-force cosine, concepts collapse, disk round trip,
compressed index types, encoder checks, and builds that fail leave nothing behind."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from spacy_el.io import InputError
from spacy_el.kb import index as index_mod
from spacy_el.build import build_index
from spacy_el.kb.index import Candidate, ConceptIndex
from spacy_el.kb.table import ConceptTable

NAMES = [
    ("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"),
    ("MESH:D009369", "neoplasms"), ("MESH:D009369", "tumor"), ("MESH:D009369", "cancer"),
    ("MESH:D006331", "heart diseases"), ("MESH:D006331", "cardiac disease"),
    ("MESH:D001943", "breast neoplasms"), ("MESH:D001943", "breast cancer"),
    ("OMIM:175100", "adenomatous polyposis coli"), ("OMIM:175100", "familial adenomatous polyposis"),
]


def random_kb(n_concepts: int, names_per: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    table = ConceptTable.from_rows((f"C{c}", f"name {c}.{j}") for c in range(n_concepts) for j in range(names_per))
    vectors = rng.standard_normal((len(table), dim)).astype("float32")
    return table, vectors


def brute_force(table: ConceptTable, vectors: np.ndarray, queries: np.ndarray, k: int):
    """Reference: cosine of every name, best name per concept, top-k concepts."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for row in q @ v.T:
        best: dict[str, float] = {}
        for i in np.argsort(-row, kind="stable"):
            best.setdefault(table.ids[i], float(row[i]))
        out.append(sorted(best.items(), key=lambda kv: -kv[1])[:k])
    return out


def test_flat_search_equals_brute_force_and_survives_disk(tmp_path):
    table, vectors = random_kb(40, 3)
    queries = np.random.default_rng(1).standard_normal((7, 16)).astype("float32")
    index = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    expected = brute_force(table, vectors, queries, k=5)
    for idx in (index, _round_trip(index, tmp_path / "idx")):
        got = idx.search(queries, k=5)
        assert [[c.concept_id for c in cands] for cands in got] == [[cid for cid, _ in e] for e in expected]
        for cands, exp in zip(got, expected):
            np.testing.assert_allclose([c.score for c in cands], [s for _, s in exp], rtol=1e-5, atol=1e-5)
            assert all(isinstance(c, Candidate) and c.source == "kb" for c in cands)
            assert all(table.names[table.ids.index(c.concept_id)].startswith("name ") for c in cands)


def _round_trip(index: ConceptIndex, path) -> ConceptIndex:
    index.save(path)
    assert sorted(p.name for p in path.iterdir()) == ["columns", "index.faiss", "meta.json"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["metric"] == "inner_product" and meta["n_names"] == len(index) and meta["dim"] == index.dim
    return ConceptIndex.load(path, use_gpu=False)


def test_table_opens_from_memory_mapped_columns_and_a_directory_without_them_is_refused(tmp_path):
    """The saved columns give the table and the saved row codes (no rebuild on the first search);
    a directory without them is refused with the way out; a table opened from columns becomes a
    list table when changed."""
    import shutil

    from spacy_el.kb.table import StringColumn

    table = ConceptTable.from_rows([("C1", "Crohn’s disease"), ("C1", "crohn disease", "train.txt"),
                                    ("C2", "état de mal"), ("C3", "x")])
    vectors = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    index = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    index.save(tmp_path / "idx")
    loaded = ConceptIndex.load(tmp_path / "idx", use_gpu=False)
    assert isinstance(loaded.table.names, StringColumn) and loaded._codes is not None
    assert loaded.table == table
    assert loaded.table.names[1] == "crohn disease" and loaded.table.names[-1] == "x"
    assert loaded.table.names[1:3] == ["crohn disease", "état de mal"] and list(loaded.table.sources)[1] == "train.txt"
    np.testing.assert_array_equal(loaded._codes[1].text, index._row_codes().text)
    queries = vectors[[2, 0]]
    assert loaded.search(queries) == index.search(queries)
    shutil.copytree(tmp_path / "idx", tmp_path / "old")
    shutil.rmtree(tmp_path / "old" / "columns")
    with pytest.raises(InputError, match="no columns/.*rebuild the index"):
        ConceptIndex.load(tmp_path / "old", use_gpu=False)
    loaded.table.add("C4", "new name")
    assert isinstance(loaded.table.names, list) and loaded.table.names[-1] == "new name" and len(loaded.table) == 5


def test_many_names_of_one_concept_collapse_to_its_best():
    """Concept C0 owns 100 names all near the query: the top-3 must still hold 3 concepts,
    which needs a second, deeper search pass (the first fetches 32 names)."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal(16).astype("float32")
    near = query + 0.01 * rng.standard_normal((100, 16)).astype("float32")
    far = rng.standard_normal((20, 16)).astype("float32")
    table = ConceptTable.from_rows([("C0", f"c0 name {i}") for i in range(100)] +
                                   [(f"C{i + 1}", f"other {i}") for i in range(20)])
    vectors = np.concatenate([near, far])
    index = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    got = index.search(query[None], k=3)[0]
    assert [c.concept_id for c in got] == [cid for cid, _ in brute_force(table, vectors, query[None], 3)[0]]
    assert len({c.concept_id for c in got}) == 3 and got[0].concept_id == "C0"
    assert got[0].score == pytest.approx(max(s for s in (near @ query) / np.linalg.norm(near, axis=1)
                                             / np.linalg.norm(query)), abs=1e-5)


def test_k_larger_than_concepts_and_empty_queries():
    table, vectors = random_kb(3, 2)
    index = ConceptIndex.from_vectors(table, vectors, use_gpu=False)
    assert len(index.search(vectors[:1], k=10)[0]) == 3
    assert index.search(np.zeros((0, 16), dtype="float32"), k=5) == []


@pytest.mark.parametrize("index_type", ["HNSW32", "IVF8,PQ8x4,RFlat", "IVF8,Flat", "PCA12,SQ8"])
def test_compressed_index_types_find_the_indexed_names(index_type, tmp_path):
    table, vectors = random_kb(300, 2, dim=16)
    index = ConceptIndex.from_vectors(table, vectors, index_type, use_gpu=False)
    loaded = _round_trip(index, tmp_path / "idx")
    assert loaded.meta["settings"] == index.meta["settings"]
    if "IVF" in index_type:
        assert index.meta["settings"]["nprobe"] == 8  # not FAISS's recall-ruining default of 1
    found = loaded.search(vectors[:50], k=5)
    # exact re-ranking (RFlat) / HNSW / IVF with 8 of 8 lists find each indexed name itself;
    # PCA to 12 of 16 dims + 8-bit scalars is lossy by design, so only ask for the top 5
    if index_type.startswith("PCA"):
        assert sum(table.ids[i] in [c.concept_id for c in cands] for i, cands in enumerate(found)) >= 45
    else:
        assert [cands[0].concept_id for cands in found] == table.ids[:50]


def test_search_settings_are_checked_and_override_on_load(tmp_path):
    table, vectors = random_kb(300, 2)
    with pytest.raises(InputError, match="ef_search"):
        ConceptIndex.from_vectors(table, vectors, "Flat", ef_search=64, use_gpu=False)
    ConceptIndex.from_vectors(table, vectors, "IVF16,Flat", nprobe=2, use_gpu=False).save(tmp_path / "i")
    assert ConceptIndex.load(tmp_path / "i").meta["settings"]["nprobe"] == 2
    assert ConceptIndex.load(tmp_path / "i", nprobe=16).meta["settings"]["nprobe"] == 16
    assert faiss.extract_index_ivf(ConceptIndex.load(tmp_path / "i", nprobe=16).index).nprobe == 16


def test_bad_index_types_are_clear_errors():
    table, vectors = random_kb(10, 2)
    with pytest.raises(InputError, match="index_type='Bogus12'"):
        ConceptIndex.from_vectors(table, vectors, "Bogus12", use_gpu=False)
    with pytest.raises(InputError, match="cannot be trained on 20 names"):
        ConceptIndex.from_vectors(table, vectors, "IVF64,Flat", use_gpu=False)


def test_empty_kb_is_a_clear_error():
    with pytest.raises(InputError, match="empty concept table"):
        ConceptIndex.from_vectors(ConceptTable(), np.zeros((0, 8), dtype="float32"))


def test_gpu_request_falls_back_on_cpu(monkeypatch):
    table, vectors = random_kb(5, 2)
    with pytest.warns(UserWarning, match="no GPU"):
        index = ConceptIndex.from_vectors(table, vectors, use_gpu=True)
    assert not index.on_gpu and index.search(vectors[:1], 1)[0][0].concept_id == "C0"

    def no_gpu_copy(_index, co=None):
        raise RuntimeError("Error in f() at x.cpp:1: this index type is not implemented on GPU")

    class ClonerOptions:  # faiss-gpu's GpuMultipleClonerOptions, absent from faiss-cpu
        shard = useFloat16 = False

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", ClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", no_gpu_copy, raising=False)
    with pytest.warns(UserWarning, match="not implemented on GPU.*running on the CPU"):
        index = ConceptIndex.from_vectors(table, vectors, use_gpu="auto")
    assert not index.on_gpu and index.search(vectors[:1], 1)[0][0].concept_id == "C0"


def test_add_aliases_to_a_loaded_index_keeps_provenance(tmp_path):
    table, vectors = random_kb(5, 2, dim=4)

    class Encoder:  # vectors by lookup, so the test is about bookkeeping, not embeddings
        dim, fingerprint = 4, "enc-1"

        def embed(self, texts, batch_size=256, show_progress=False):
            return np.eye(4, dtype="float32")[[len(t) % 4 for t in texts]]

    ConceptIndex.from_vectors(table, vectors, encoder=Encoder()).save(tmp_path / "i")
    index = ConceptIndex.load(tmp_path / "i", Encoder())
    aliases = ConceptTable.from_rows([("C1", "name 1.0", "train.txt"), ("C2", "kidney stone", "train.txt")])
    assert index.add_aliases(aliases, Encoder()) == 1  # the first is already a KB name
    assert len(index) == 11 and index.meta["alias_files"] == ["train.txt"]
    assert index.meta["sources"] == {"kb": 10, "train.txt": 1}
    hit = index.search(np.eye(4, dtype="float32")[[len("kidney stone") % 4]], k=1)[0][0]
    assert hit.score == pytest.approx(1.0) and hit.source in ("kb", "train.txt")
    index.save(tmp_path / "i")
    assert ConceptIndex.load(tmp_path / "i").table.sources.count("train.txt") == 1


def test_alias_ids_take_the_kb_spelling_of_multi_id_concepts():
    kb = ConceptTable.from_rows([("MESH:C567755|OMIM:613097", "tooth agenesis 6")])
    aliases = ConceptTable.from_rows([("MESH:C567755", "sthag6", "t"), ("MESH:D000001", "x", "t")])
    assert index_mod.align_alias_ids(kb, aliases).ids == ["MESH:C567755|OMIM:613097", "MESH:D000001"]


# ---------------------------------------------------------------- with a real (tiny) encoder
@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    from spacy_el.sap.encoder import SapEncoder

    return SapEncoder.load(tiny_bert_dir, device="cpu")


def test_build_with_encoder_links_each_name_to_its_concept(encoder, tmp_path):
    table = ConceptTable.from_rows(NAMES)
    index = ConceptIndex.build(table, encoder, "Flat", batch_size=4, use_gpu=False)
    assert index.meta["encoder"]["fingerprint"] == encoder.fingerprint and index.dim == encoder.dim
    index.save(tmp_path / "idx")
    loaded = ConceptIndex.load(tmp_path / "idx", encoder)
    hits = loaded.search(encoder.embed(table.names), k=3)
    assert [h[0].concept_id for h in hits] == table.ids
    assert all(h[0].score == pytest.approx(1.0, abs=1e-4) for h in hits)
    # brute force over the same encoder's vectors
    vecs = encoder.embed(table.names)
    queries = encoder.embed(["sugar diabetes", "tumour of the breast"])
    assert [[c.concept_id for c in h] for h in loaded.search(queries, 3)] == \
        [[cid for cid, _ in e] for e in brute_force(table, vecs, queries, 3)]


def test_other_encoder_is_refused_with_the_fix(encoder, tiny_bert_dir, tmp_path):
    from spacy_el.sap.encoder import SapEncoder

    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(tmp_path / "idx")
    other = SapEncoder.load(tiny_bert_dir, device="cpu", pooling="mean")
    with pytest.raises(InputError, match=r"idx was built with encoder .*rebuild the index"):
        ConceptIndex.load(tmp_path / "idx", other)


def _write_kb(path, rows):
    path.write_text("".join(f"{cid}\t{name}\n" for cid, name in rows), encoding="utf-8")
    return path


def test_interrupted_build_leaves_no_index_behind(encoder, tmp_path, monkeypatch):
    kb = _write_kb(tmp_path / "kb.tsv", NAMES)
    real_embed = type(encoder).embed

    def embed_then_die(self, texts, *args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while names were embedded

    monkeypatch.setattr(type(encoder), "embed", embed_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(kb, encoder, tmp_path / "out", use_gpu=False)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(type(encoder), "embed", real_embed)

    # a finished index survives a later build that dies while writing
    build_index(kb, encoder, tmp_path / "out", use_gpu=False)
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}

    def write_dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ConceptTable, "to_columns", write_dies)
    with pytest.raises(OSError):
        build_index(_write_kb(tmp_path / "kb2.tsv", NAMES[:4]), encoder, tmp_path / "out", use_gpu=False)
    assert {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_malformed_kb_row_names_file_and_line(encoder, tmp_path):
    kb = tmp_path / "kb.tsv"
    kb.write_text("MESH:D003920\tdiabetes\nMESH:D009369 tumor without a tab\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"kb\.tsv, line 2"):
        build_index(kb, encoder, tmp_path / "out", kb_format="tsv", use_gpu=False)
    assert not (tmp_path / "out").exists()


def test_empty_kb_file_is_a_clear_error(encoder, tmp_path):
    kb = tmp_path / "empty.tsv"
    kb.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        build_index(kb, encoder, tmp_path / "out", use_gpu=False)
    assert not (tmp_path / "out").exists()


def test_mention_aliases_keep_only_the_requested_types(tmp_path):
    from spacy_el.build import mention_alias_table

    corpus = tmp_path / "cdr.PubTator"
    corpus.write_text("1|t|Cisplatin nephrotoxicity.\n1|a|x\n"
                      "1\t0\t9\tCisplatin\tChemical\tD002945\n"
                      "1\t10\t24\tnephrotoxicity\tDisease\tD007674\n\n", encoding="utf-8")
    every = mention_alias_table([corpus])
    diseases = mention_alias_table([corpus], ["Disease"])
    assert sorted(every.names) == ["cisplatin", "nephrotoxicity"]
    assert diseases.names == ["nephrotoxicity"] and diseases.ids == ["MESH:D007674"]


def test_same_text_names_tie_and_a_corpus_alias_wins_the_tie():
    # MEDIC-style: one text under two concepts, plus the corpus's own alias of that text; an
    # int8 encoder gives the copies slightly different vectors: they must still tie
    rng = np.random.default_rng(0)
    v = rng.normal(size=8).astype("float32")
    other = rng.normal(size=8).astype("float32")
    table = ConceptTable(["OMIM:106210", "MESH:D015783", "MESH:D015783", "MESH:D000001"],
                         ["ANIRIDIA", "Aniridia", "aniridia ", "other disease"],
                         ["kb", "kb", "train.PubTator", "kb"])
    vectors = np.stack([v + 0.001, v, v - 0.002, other])
    index = ConceptIndex.from_vectors(table, vectors, "Flat")
    (first, second, third), = index.search(v[None], k=3)
    assert (first.concept_id, first.source) == ("MESH:D015783", "train.PubTator")
    assert second.concept_id == "OMIM:106210" and first.score == second.score > third.score
    plain = ConceptIndex.from_vectors(ConceptTable(table.ids[:2], table.names[:2], ["kb", "kb"]), vectors[:2], "Flat")
    a, b = plain.search(v[None], k=2)[0]  # two KB names: a tie, in the index's own order
    assert {a.concept_id, b.concept_id} == {"OMIM:106210", "MESH:D015783"} and a.score == b.score


def test_tied_names_rank_later_row_first_whatever_faiss_returns_first():
    # one text under two concepts with the very same vector: FAISS may return either first (its inner
    # products move in their last bits with the number of BLAS threads); the later row comes first
    from spacy_el.kb.ranking import collapse, row_codes

    table = ConceptTable(["OMIM:106210", "MESH:D015783", "MESH:D000001"], ["aniridia", "aniridia", "other"], ["kb"] * 3)
    codes, bonus = row_codes(table), np.zeros(3)
    for order, scores in (([0, 1, 2], [0.9, 0.9, 0.5]), ([0, 1, 2], [0.9000001, 0.9, 0.5]), ([1, 0, 2], [0.9, 0.9, 0.5])):
        first, second, _ = collapse(np.array([scores]), np.array([order]), 3, codes, bonus, table)[0]
        assert (first.concept_id, second.concept_id) == ("MESH:D015783", "OMIM:106210")
    # of two spellings of one text, the one closer to the query still comes first
    table = ConceptTable(["OMIM:106210", "MESH:D015783"], ["ANIRIDIA", "Aniridia"], ["kb", "kb"])
    first, second = collapse(np.array([[0.95, 0.9]]), np.array([[1, 0]]), 2, row_codes(table), np.zeros(2), table)[0]
    assert (first.concept_id, second.concept_id) == ("MESH:D015783", "OMIM:106210") and first.score == second.score


def _lipoma_index() -> tuple[ConceptIndex, np.ndarray]:
    """MEDIC's "LIPOMA" (OMIM) and "Lipoma" (MeSH): one text, two concepts, equal cosines."""
    rng = np.random.default_rng(0)
    v, near, other = (rng.normal(size=8).astype("float32") for _ in range(3))
    table = ConceptTable(["OMIM:151900", "MESH:D008067", "MESH:D008068|OMIM:151910", "MESH:D000001"],
                         ["LIPOMA", "Lipoma", "Lipomatosis", "other disease"], ["kb"] * 4)
    vectors = np.stack([v, v, v + 0.3 * near, other])
    return ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False), v


def test_corpus_prior_breaks_ties_keeps_cosines_and_survives_disk(tmp_path):
    index, v = _lipoma_index()
    before = index.search(v[None], k=3)[0]  # a tie, in the index's own order
    assert {c.concept_id for c in before[:2]} == {"OMIM:151900", "MESH:D008067"}
    assert before[0].score == before[1].score
    # counts spelt as a corpus spells them: the MeSH id alone joins its multi-id KB concept
    index.set_prior({"MESH:D008067": 12, "MESH:D008068": 1, "MESH:D999999": 4}, ["train.PubTator"])
    after = index.search(v[None], k=3)[0]
    assert [c.concept_id for c in after[:2]] == ["MESH:D008067", "OMIM:151900"]
    assert after[0].score == after[1].score == before[0].score  # scores stay cosines
    assert index.prior == {"MESH:D008067": 12, "MESH:D008068|OMIM:151910": 1}
    assert index.meta["prior"] == {"weight": index_mod.DEFAULT_PRIOR_WEIGHT, "files": ["train.PubTator"],
                                        "n_concepts": 2, "n_mentions": 13, "n_mentions_absent_from_kb": 4}
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "prior.tsv").read_text() == "MESH:D008067\t12\nMESH:D008068|OMIM:151910\t1\n"
    loaded = ConceptIndex.load(tmp_path / "idx", use_gpu=False)
    assert [c.concept_id for c in loaded.search(v[None], k=2)[0]] == ["MESH:D008067", "OMIM:151900"]
    off = ConceptIndex.load(tmp_path / "idx", use_gpu=False, prior_weight=0)  # 0 turns it off
    assert [c.concept_id for c in off.search(v[None], k=2)[0]] == [c.concept_id for c in before[:2]]


def test_a_large_prior_weight_outranks_a_better_cosine():
    index, v = _lipoma_index()
    index.set_prior({"MESH:D008068": 100}, weight=0.0)
    assert index.search(v[None], k=1)[0][0].concept_id in ("OMIM:151900", "MESH:D008067")
    index.set_prior_weight(1.0)  # log(101) ≈ 4.6 > any cosine gap
    assert index.search(v[None], k=1)[0][0].concept_id == "MESH:D008068|OMIM:151910"


def test_bad_prior_weight_and_prior_file_are_clear_errors(tmp_path):
    index, _ = _lipoma_index()
    with pytest.raises(InputError, match="prior_weight"):
        index.set_prior({"MESH:D008067": 1}, weight=-1)
    index.set_prior({"MESH:D008067": 1})
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "prior.tsv").write_text("MESH:D008067\t1\nMESH:D008068\tmany\n")
    with pytest.raises(InputError, match=r"prior.tsv, line 2"):
        ConceptIndex.load(tmp_path / "idx", use_gpu=False)


def test_build_index_prior_from_counts_train_mentions(encoder, tmp_path):
    kb = tmp_path / "kb.tsv"
    _write_kb(kb, [("MESH:D008067", "Lipoma"), ("OMIM:151900", "LIPOMA"), ("MESH:D002945", "cisplatin")])
    corpus = tmp_path / "train.PubTator"
    corpus.write_text("1|t|Lipoma and lipoma after cisplatin.\n1|a|x\n"
                      "1\t0\t6\tLipoma\tDisease\tD008067\n1\t11\t17\tlipoma\tDisease\tD008067\n"
                      "1\t24\t33\tcisplatin\tChemical\tD002945\n\n", encoding="utf-8")
    index = build_index(kb, encoder, tmp_path / "idx", kb_format="tsv", prior_from=[corpus],
                        mention_types=["Disease"], use_gpu=False)
    assert index.prior == {"MESH:D008067": 2} and index.meta["prior"]["files"] == ["train.PubTator"]
    assert index.meta["sources"] == {"kb": 3}  # a prior adds no names
    loaded = ConceptIndex.load(tmp_path / "idx", encoder, use_gpu=False)
    assert loaded.search(encoder.embed(["lipoma"]), k=1)[0][0].concept_id == "MESH:D008067"
    with pytest.raises(InputError, match="without a corpus to count: give --prior-from"):
        build_index(kb, encoder, tmp_path / "idx2", kb_format="tsv", prior_weight=0.1, use_gpu=False)
    assert not (tmp_path / "idx2").exists()


def test_truncated_meta_json_is_a_clear_error(encoder, tmp_path):
    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(tmp_path / "idx")
    meta = tmp_path / "idx" / "meta.json"
    meta.write_text(meta.read_text()[:40], encoding="utf-8")
    with pytest.raises(InputError, match=r"meta.json: not valid JSON.*rebuild the index"):
        ConceptIndex.load(tmp_path / "idx")


def test_meta_dim_that_disagrees_with_index_faiss_is_named(encoder, tmp_path):
    import json

    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["dim"] += 1
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(InputError, match=r"index.faiss holds vectors of dim \d+ but meta.json says dim"):
        ConceptIndex.load(tmp_path / "idx", encoder)


def test_a_tab_in_a_kb_id_is_refused_at_build_time_with_file_and_line(encoder, tmp_path):
    kb = tmp_path / "CTD_diseases.txt"
    kb.write_text("D003920||diabetes\nC5677\t55|613097||lipoma\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"CTD_diseases.txt, line 2: the concept id .* holds a tab"):
        build_index(kb, encoder, tmp_path / "out", kb_format="medic", use_gpu=False)
    assert not (tmp_path / "out").exists()
