"""Streaming index building: trained on a sample, names added chunk by chunk (never all vectors
at once), an ordinary index directory that `ConceptIndex.load` reads; the GPU path (sharded over
every GPU) falls back to the CPU cleanly on this machine."""
from __future__ import annotations

import warnings

import faiss
import numpy as np
import pytest

from spacy_el.build import build_index_streaming
from spacy_el.io import InputError
from spacy_el.kb import faiss_utils
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.ranking import row_codes
from spacy_el.kb.streaming import build_index_from_chunks
from spacy_el.kb.table import ConceptTable

WORDS = ["cardiac", "renal", "hepatic", "pulmonary", "neural", "ocular", "skin", "bone", "muscle", "blood"]
KINDS = ["disease", "failure", "tumor", "syndrome", "infection", "atrophy", "dysplasia", "fibrosis"]
ROWS = [(f"C{i:04d}", f"{w} {k}{suffix}", "kb") for i, (w, k) in enumerate((w, k) for w in WORDS for k in KINDS)
        for suffix in ("", " type 2")]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    from spacy_el.sap.encoder import SapEncoder

    return SapEncoder.load(tiny_bert_dir, device="cpu")


def test_streaming_build_adds_chunks_and_loads_as_a_concept_index(encoder, tmp_path, monkeypatch):
    sizes = []
    real = type(encoder).embed

    def spy(self, texts, *args, **kwargs):
        sizes.append(len(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(encoder), "embed", spy)
    meta = build_index_streaming(lambda: iter(ROWS), encoder, tmp_path / "index", index_type="IVF4,PQ8x4",
                                 train_size=100, chunk_size=50, nprobe=4)
    assert sizes == [100, 50, 50, 50, 10]  # the training sample, then one chunk at a time
    assert meta["n_names"] == len(ROWS) and meta["n_concepts"] == len(ROWS) // 2 and meta["build"]["streaming"]
    index = ConceptIndex.load(tmp_path / "index", encoder)
    assert index.table.rows() and list(index.table.rows()) == ROWS
    # the table opens from its memory-mapped columns with the row codes saved by the build
    assert ConceptTable.from_rows(ROWS) == index.table and index._codes is not None
    rebuilt = row_codes(ConceptTable.from_rows(ROWS))
    for field in ("text", "concept", "is_kb"):
        np.testing.assert_array_equal(getattr(index._codes[1], field), getattr(rebuilt, field))
    monkeypatch.setattr(type(encoder), "embed", real)
    # trained on every name (the sample is all of them), it is the index `ConceptIndex.build` makes
    build_index_streaming(lambda: iter(ROWS), encoder, tmp_path / "full", index_type="IVF4,PQ8x4",
                          train_size=len(ROWS), chunk_size=64, nprobe=4)
    streamed = ConceptIndex.load(tmp_path / "full", encoder)
    whole = ConceptIndex.build(ConceptTable.from_rows(ROWS), encoder, "IVF4,PQ8x4", nprobe=4, use_gpu=False)
    queries = encoder.embed([r[1] for r in ROWS[::7]] + ["heart disease", "kidney failure"])
    assert streamed.search(queries, k=5) == whole.search(queries, k=5)
    assert streamed.meta["encoder"] == whole.meta["encoder"] and streamed.meta["settings"] == whole.meta["settings"]


def test_streaming_build_refuses_bad_chunks_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="a chunk of 2 rows came with vectors of shape"):
        build_index_from_chunks(tmp_path / "index", rng.normal(size=(64, 8)), [(ROWS[:2], rng.normal(size=(3, 8)))],
                                index_type="IVF2,Flat", encoder_meta={})
    with pytest.raises(InputError, match="no names to index"):
        build_index_from_chunks(tmp_path / "index", rng.normal(size=(64, 8)), [], index_type="Flat", encoder_meta={})
    with pytest.raises(InputError, match="not a valid FAISS index_factory string"):
        build_index_from_chunks(tmp_path / "index", rng.normal(size=(64, 8)), [], index_type="IVF2,PQ3",
                                encoder_meta={})
    assert not (tmp_path / "index").exists()


def test_gpu_requested_without_a_gpu_falls_back_to_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 16)).astype("float32")
    with pytest.warns(UserWarning, match="FAISS sees no GPU"):
        meta = build_index_from_chunks(tmp_path / "index", vectors[:100], [(ROWS[:100], vectors[:100]),
                                                                            (ROWS[100:], vectors[100:160])],
                                       index_type="IVF4,Flat", encoder_meta={}, use_gpu=True)
    assert meta["build"]["gpu"] is False and meta["n_names"] == 160
    index = ConceptIndex.load(tmp_path / "index", use_gpu=True)
    assert not index.on_gpu and index.search(vectors[:1], k=1)[0][0].concept_id == ROWS[0][0]


def test_gpu_path_shards_over_every_gpu_and_falls_back_when_cloning_fails(monkeypatch):
    index = faiss.IndexFlatIP(8)
    calls = []

    def clone(idx, co=None):
        calls.append(co.shard)
        return idx  # stands in for the GPU index: the wiring is what is checked here

    class ClonerOptions:  # faiss-gpu's GpuMultipleClonerOptions (absent from faiss-cpu)
        shard = False
        useFloat16 = False

    monkeypatch.setattr(faiss_utils, "gpu_count", lambda: 2)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", ClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", clone, raising=False)
    assert faiss_utils.to_all_gpus(index, "auto", shard=True) == (index, True) and calls == [True]
    assert faiss_utils.maybe_gpu(index, "auto")[1] and calls == [True, False]

    def broken(idx, co=None):
        raise RuntimeError("Error in foo: CUDA out of memory")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", broken, raising=False)
    with pytest.warns(UserWarning, match="CUDA out of memory"):
        assert faiss_utils.to_all_gpus(index, True, shard=True) == (index, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert faiss_utils.to_all_gpus(index, False) == (index, False)
