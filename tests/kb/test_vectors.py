"""Stored vectors: a compressed index rescores its candidates exactly from float16 vectors on disk."""
from __future__ import annotations

import numpy as np
import pytest

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.streaming import build_index_from_chunks
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.vectors import VECTORS_FILE

N, DIM = 1500, 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype("float32")
    table = ConceptTable.from_rows((f"C{i // 2}", f"name {i}", "kb") for i in range(N))  # two names per concept
    queries = vectors[rng.choice(N, 200, replace=False)] + rng.normal(scale=0.7, size=(200, DIM)).astype("float32")
    return table, vectors, queries


def concepts(results):
    return [[c.concept_id for c in found] for found in results]


def same_up_to_float16(found, truth) -> bool:
    """The same cosines rank by rank (float16 moves them ~1e-4), and the same concepts where
    neighbouring cosines are further apart than that (`truth` holds one concept more than
    `found`, the neighbour of the last)."""
    for got, want in zip(found, truth):
        exact_cos = np.array([c.score for c in want])
        if not np.allclose([c.score for c in got], exact_cos[:len(got)], atol=2e-3):
            return False
        gaps = np.abs(np.diff(exact_cos, prepend=np.inf))
        clear = (gaps[:-1] > 2e-3) & (gaps[1:] > 2e-3)
        if [c.concept_id for c, ok in zip(got, clear) if ok] != [c.concept_id for c, ok in zip(want, clear) if ok]:
            return False
    return True


def test_stored_vectors_make_a_compressed_index_rank_as_the_exact_one(data, tmp_path):
    table, vectors, queries = data
    exact = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    coarse = ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False)
    coarse.save(tmp_path / "plain")
    stored = ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False, store_vectors=True)
    stored.save(tmp_path / "stored")
    assert (tmp_path / "stored" / VECTORS_FILE).stat().st_size == N * DIM * 2
    assert not (tmp_path / "plain" / VECTORS_FILE).exists()
    truth = concepts(exact.search(queries, k=5))
    assert concepts(coarse.search(queries, k=5)) != truth  # PQ4x4 alone reorders near neighbours
    # a rescore depth that reaches every name is the exact search, to float16 precision
    everything = ConceptIndex.load(tmp_path / "stored", rescore_factor=N)
    assert isinstance(everything.vectors.array, np.memmap)
    found = everything.search(queries, k=5)
    assert same_up_to_float16(found, exact.search(queries, k=6))
    # the saved default (rescore 4× the names wanted) already beats the codes alone
    default = ConceptIndex.load(tmp_path / "stored")

    def top1(index):
        return np.mean([a[0] == b[0] for a, b in zip(concepts(index.search(queries, k=5)), truth)])
    assert top1(default) > top1(coarse)


def test_streaming_build_stores_vectors_and_aliases_extend_them(data, tmp_path):
    table, vectors, queries = data
    rows = list(table.rows())
    chunks = [(rows[i:i + 400], vectors[i:i + 400]) for i in range(0, N, 400)]
    meta = build_index_from_chunks(tmp_path / "index", vectors, chunks, index_type="PQ4x4", encoder_meta={},
                                   store_vectors=True)
    assert meta["vectors"]["n"] == N and meta["vectors"]["dim"] == DIM
    streamed = ConceptIndex.load(tmp_path / "index", rescore_factor=N)
    exact = ConceptIndex.from_vectors(table, vectors, "Flat", use_gpu=False)
    assert same_up_to_float16(streamed.search(queries, k=5), exact.search(queries, k=6))

    class Fixed:  # an encoder that embeds a new name as a known vector
        dim, fingerprint = DIM, None

        def embed(self, texts, batch_size=256, show_progress=False):
            return np.stack([queries[0] for _ in texts])

    assert streamed.add_aliases(ConceptTable.from_rows([("C3", "the alias", "train.txt")]), Fixed()) == 1
    assert len(streamed.vectors) == N + 1
    assert streamed.search(queries[:1], k=1)[0][0].concept_id == "C3"
    streamed.save(tmp_path / "more")
    again = ConceptIndex.load(tmp_path / "more")
    assert len(again.vectors) == N + 1 and again.search(queries[:1], k=1)[0][0].concept_id == "C3"


def test_removing_concepts_keeps_the_stored_vectors_in_step(data, tmp_path):
    from spacy_el.kb.update import update_index

    table, vectors, queries = data
    ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False, store_vectors=True).save(tmp_path / "index")
    gone = {f"C{i}" for i in range(0, N // 2, 3)}
    update_index(tmp_path / "index", remove=sorted(gone))
    updated = ConceptIndex.load(tmp_path / "index", rescore_factor=N)
    keep = np.array([cid not in gone for cid in table.ids])
    assert len(updated.vectors) == keep.sum() == len(updated.table)
    rest = ConceptTable.from_rows(r for r, k in zip(table.rows(), keep) if k)
    exact = ConceptIndex.from_vectors(rest, vectors[keep], "Flat", use_gpu=False)
    assert same_up_to_float16(updated.search(queries, k=5), exact.search(queries, k=6))


def test_a_cut_vector_file_or_a_useless_setting_is_a_clear_error(data, tmp_path):
    table, vectors, _ = data
    ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False, store_vectors=True).save(tmp_path / "stored")
    with pytest.raises(InputError, match="stores no vectors to rescore with"):
        ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False).save(tmp_path / "plain") or \
            ConceptIndex.load(tmp_path / "plain", rescore_factor=8)
    path = tmp_path / "stored" / VECTORS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"vectors.f16: expected 96000 bytes .* found 1000 bytes"):
        ConceptIndex.load(tmp_path / "stored")


def test_prefetch_reads_the_index_files_in_the_background_unless_they_would_not_fit(data, tmp_path, monkeypatch):
    import spacy_el.io as io_mod

    table, vectors, queries = data
    ConceptIndex.from_vectors(table, vectors, "PQ4x4", use_gpu=False, store_vectors=True).save(tmp_path / "stored")
    read = []
    real_open = open

    def spy_open(path, *args, **kwargs):  # the files the prefetch reads (memory maps open their own)
        read.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io_mod, "open", spy_open, raising=False)
    index = ConceptIndex.load(tmp_path / "stored")
    assert index.prefetching is None and read == []  # no prefetch unless asked
    prefetched = ConceptIndex.load(tmp_path / "stored", prefetch=True)
    prefetched.prefetching.join(timeout=30)
    files = sorted(str(p) for p in (tmp_path / "stored").rglob("*") if p.is_file())
    assert not prefetched.prefetching.is_alive() and sorted(set(read) - {"/proc/meminfo"}) == files
    assert str(tmp_path / "stored" / VECTORS_FILE) in files
    assert concepts(prefetched.search(queries, k=5)) == concepts(index.search(queries, k=5))
    total = sum((tmp_path / "stored" / p).stat().st_size for p in files)
    monkeypatch.setattr(io_mod, "available_memory", lambda: total - 1)  # a byte short
    assert ConceptIndex.load(tmp_path / "stored", prefetch=True).prefetching is None
    assert ConceptIndex.load(tmp_path / "stored", mmap=False, prefetch=True).prefetching is None  # all in memory
