"""sap_linker after an entity_ruler: links, candidates, NIL threshold, label filter, batching,
cache, disk and bytes round trips (without the original paths), registered loaders, the error
handler, scorer, clear errors."""
from __future__ import annotations

import shutil

import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example

from spacy_el.build import index_from_dir, index_from_kb
from spacy_el.io import InputError
from spacy_el.kb.index import Candidate, ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.ranking import TIE_DECIMALS
from spacy_el.linker.alternatives import ALTERNATIVES_KEY
from spacy_el.sap.encoders import encoder_from_path

NAMES = [
    ("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"),
    ("MESH:D009369", "neoplasms"), ("MESH:D009369", "cancer"),
    ("MESH:D006331", "heart diseases"), ("MESH:D006331", "cardiac disease"),
    ("OMIM:175100", "adenomatous polyposis coli"), ("OMIM:175100", "familial adenomatous polyposis"),
]
PATTERNS = [{"label": "DISEASE", "pattern": p} for p in
            ["diabetes", "cancer", "cardiac disease", "heart attack", "APC", "adenomatous polyposis coli"]] + \
           [{"label": "GENE", "pattern": "BRCA1"}]
TEXT = "Patients with diabetes and cancer, but no cardiac disease or heart attack, carried BRCA1."


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    from spacy_el.sap.encoder import SapEncoder

    return SapEncoder.load(tiny_bert_dir, device="cpu")


@pytest.fixture(scope="module")
def index_dir(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("linker") / "index"
    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(path)
    return path


@pytest.fixture(scope="module")
def stored_index_dir(encoder, tmp_path_factory):
    """The same names in a compressed index (SQ4) that keeps their vectors on disk for exact rescoring."""
    path = tmp_path_factory.mktemp("linker_stored") / "index"
    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, "SQ4", use_gpu=False, store_vectors=True).save(path)
    return path


def make_nlp(tiny_bert_dir, index_dir, **config):
    """entity_ruler + sap_linker, initialized through the registered loaders. The threshold is 0
    unless given: the random tiny BERT's cosines say nothing about a good NIL cut."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, **config})
    linker.initialize(encoder_loader=encoder_from_path(str(tiny_bert_dir)),
                      index_loader=index_from_dir(str(index_dir)))
    return nlp


@pytest.fixture(scope="module")
def nlp(tiny_bert_dir, index_dir):
    return make_nlp(tiny_bert_dir, index_dir)


def links(doc):
    return [(e.text, e.label_, e.kb_id_, e._.kb_candidates) for e in doc.ents]


def test_every_entity_gets_its_concept_and_ranked_candidates(nlp):
    doc = nlp(TEXT)
    by_text = {e.text: e for e in doc.ents}
    assert by_text["diabetes"].kb_id_ == "MESH:D003920" and by_text["cancer"].kb_id_ == "MESH:D009369"
    assert by_text["cardiac disease"].kb_id_ == "MESH:D006331"
    for ent in doc.ents:
        cands = ent._.kb_candidates
        assert 1 <= len(cands) <= 4 and all(isinstance(c, Candidate) for c in cands)
        rounded = [round(c.score, TIE_DECIMALS) for c in cands]  # closer cosines are ties, by design
        assert rounded == sorted(rounded, reverse=True)
        assert len({c.concept_id for c in cands}) == len(cands)  # names collapsed to concepts
        assert ent.kb_id_ == cands[0].concept_id
    exact = by_text["diabetes"]._.kb_candidates[0]
    assert exact.name == "diabetes" and exact.score == pytest.approx(1.0, abs=1e-4) and exact.source == "kb"
    # the kb id reaches the tokens, as spaCy's own entity_linker does
    assert {t.ent_kb_id_ for t in by_text["cardiac disease"]} == {"MESH:D006331"}


def test_threshold_sends_weak_links_to_nil(tiny_bert_dir, index_dir):
    doc = make_nlp(tiny_bert_dir, index_dir, threshold=1.5, nil_id="CUI-less")(TEXT)
    assert {e.kb_id_ for e in doc.ents} == {"CUI-less"}
    assert all(e._.kb_candidates for e in doc.ents)  # the candidates stay visible
    # between the best non-exact match and the cosine 1 of exact names (a random tiny BERT
    # puts all strings close together, so the cut is placed from the scores themselves)
    scores = {e.text: e._.kb_candidates[0].score for e in doc.ents}
    assert scores["heart attack"] < 1 - 1e-6
    doc = make_nlp(tiny_bert_dir, index_dir, threshold=(scores["heart attack"] + 1) / 2)(TEXT)
    kb_ids = {e.text: e.kb_id_ for e in doc.ents}
    assert kb_ids["diabetes"] == "MESH:D003920"  # an exact name has cosine 1
    assert kb_ids["heart attack"] == "NIL"  # no KB name is this string


def test_label_filter_leaves_other_entities_alone(tiny_bert_dir, index_dir):
    doc = make_nlp(tiny_bert_dir, index_dir, labels=["DISEASE"], top_k=2)(TEXT)
    gene = [e for e in doc.ents if e.label_ == "GENE"]
    assert gene and gene[0].kb_id_ == "" and gene[0]._.kb_candidates is None
    assert all(len(e._.kb_candidates) == 2 for e in doc.ents if e.label_ == "DISEASE")


def test_empty_doc_and_doc_without_entities(nlp):
    assert len(nlp("")) == 0
    doc = nlp("Nothing to link here.")
    assert not doc.ents
    assert list(nlp.pipe(["", "No entities.", TEXT]))[2].ents


def test_one_thousand_entities_in_one_doc_embed_each_string_once(tiny_bert_dir, index_dir, monkeypatch):
    nlp = make_nlp(tiny_bert_dir, index_dir, performance={"name_lookup": False})  # else these KB names skip the encoder
    linker = nlp.get_pipe("sap_linker")
    embedded = []
    real = type(linker.encoder).embed

    def spy(self, texts, *args, **kwargs):
        embedded.append(list(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(linker.encoder), "embed", spy)
    doc = nlp("diabetes and cancer ; " * 500)
    assert len(doc.ents) == 1000
    assert {e.kb_id_ for e in doc.ents} == {"MESH:D003920", "MESH:D009369"}
    assert embedded == [["diabetes", "cancer"]]
    nlp("cancer again")  # served by the LRU cache
    assert embedded == [["diabetes", "cancer"]]


def test_texts_the_uncased_encoder_cannot_tell_apart_are_embedded_and_searched_once(tiny_bert_dir, index_dir,
                                                                                   monkeypatch):
    nlp = make_nlp(tiny_bert_dir, index_dir, performance={"name_lookup": False})
    linker = nlp.get_pipe("sap_linker")
    embedded, searched = [], []
    real_embed, real_search = type(linker.encoder).embed, ConceptIndex.search
    monkeypatch.setattr(type(linker.encoder), "embed",
                        lambda self, texts, *a, **kw: embedded.append(list(texts)) or real_embed(self, texts, *a, **kw))
    monkeypatch.setattr(ConceptIndex, "search",
                        lambda self, vectors, k=5, **kw: searched.append(len(vectors)) or real_search(self, vectors, k, **kw))
    doc = nlp.make_doc("Diabetes , diabetes and DIABETES ; Heart attack or heart attack")
    doc.ents = [Span(doc, i, j, "DISEASE") for i, j in [(0, 1), (2, 3), (4, 5), (6, 8), (9, 11)]]
    doc = linker(doc)
    assert embedded == [["diabetes", "heart attack"]] and searched == [2]
    assert [e.kb_id_ for e in doc.ents[:3]] == ["MESH:D003920"] * 3 and doc.ents[3].kb_id_ == doc.ents[4].kb_id_
    assert len({tuple(e._.kb_candidates) for e in doc.ents[:3]}) == 1
    assert doc.ents[3]._.kb_candidates == doc.ents[4]._.kb_candidates


def test_lru_cache_is_bounded(tiny_bert_dir, index_dir):
    nlp = make_nlp(tiny_bert_dir, index_dir, performance={"cache_size": 2})
    nlp(TEXT)
    cache = nlp.get_pipe("sap_linker").search.cached()
    assert cache == ["heart attack", "brca1"]  # the most recent two (as the uncased encoder reads them)
    nlp = make_nlp(tiny_bert_dir, index_dir, performance={"cache_size": 0})
    assert links(nlp(TEXT)) == links(make_nlp(tiny_bert_dir, index_dir)(TEXT))
    assert not len(nlp.get_pipe("sap_linker").search)


def test_search_results_of_cached_mentions_are_reused_until_the_index_changes(tiny_bert_dir, index_dir, monkeypatch):
    nlp = make_nlp(tiny_bert_dir, index_dir, performance={"cache_size": 3})
    linker = nlp.get_pipe("sap_linker")
    searched = []
    real = ConceptIndex.search

    def spy(self, vectors, k=5):
        searched.append(len(vectors))
        return real(self, vectors, k)

    monkeypatch.setattr(ConceptIndex, "search", spy)
    first = links(nlp(TEXT))
    assert searched == [5]
    assert links(nlp(TEXT)) == first and searched == [5, 2]  # the 3 cached mentions were not searched again
    assert set(linker.search._found) <= set(linker.search.cached())  # evicted vectors take their results along
    linker.index.set_prior({"MESH:D009369": 5}, weight=0.5)  # a new prior changes rankings: search again
    boosted = links(nlp(TEXT))
    assert searched == [5, 2, 5]
    assert {text: kb_id for text, _, kb_id, _ in boosted}["heart attack"] == "MESH:D009369"
    linker.cfg["top_k"] = 1
    assert all(len(c) == 1 for *_, c in links(nlp(TEXT))) and searched[-1] == 5
    linker.clear_cache()
    assert not len(linker.search) and not linker.search._found


def test_pipe_equals_one_doc_at_a_time(tiny_bert_dir, index_dir):
    texts = [TEXT, "", "cancer of the heart", "APC and diabetes mellitus", TEXT.lower()]
    one_by_one = [links(make_nlp(tiny_bert_dir, index_dir)(t)) for t in texts]
    batched = [links(d) for d in make_nlp(tiny_bert_dir, index_dir).pipe(texts, batch_size=3)]
    # batches pad differently, which moves float32 cosines by ~1e-7 (and the random tiny BERT puts
    # every string within 1e-4 of every other), so scores are compared with a tolerance
    assert [[e[:3] for e in d] for d in batched] == [[e[:3] for e in d] for d in one_by_one]
    for doc_b, doc_1 in zip(batched, one_by_one):
        for ent_b, ent_1 in zip(doc_b, doc_1):
            assert {c.concept_id: pytest.approx(c.score, abs=1e-5) for c in ent_1[3]} == \
                {c.concept_id: c.score for c in ent_b[3]}


def test_to_disk_then_spacy_load_links_the_same_without_the_config_paths(tiny_bert_dir, index_dir, tmp_path):
    enc_copy, idx_copy = tmp_path / "enc", tmp_path / "idx"
    shutil.copytree(tiny_bert_dir, enc_copy)
    shutil.copytree(index_dir, idx_copy)
    nlp = make_nlp(enc_copy, idx_copy, top_k=3)
    before = links(nlp(TEXT))
    nlp.to_disk(tmp_path / "pipeline")
    assert {p.name for p in (tmp_path / "pipeline" / "sap_linker").iterdir()} == {"encoder", "index"}
    shutil.rmtree(enc_copy)
    shutil.rmtree(idx_copy)  # the config still names these paths: they must not be needed
    loaded = spacy.load(tmp_path / "pipeline")
    assert links(loaded(TEXT)) == before


def test_factory_loads_nothing_and_says_how_to_give_the_parts(tmp_path):
    unconfigured = spacy.blank("en")
    unconfigured.add_pipe("entity_ruler").add_patterns(PATTERNS)
    linker = unconfigured.add_pipe("sap_linker")
    assert unconfigured("no entities here").ents == ()  # nothing to link, nothing needed
    with pytest.raises(InputError, match=r"no encoder.*encoder_loader.*EncoderFromPath"):
        unconfigured(TEXT)
    with pytest.raises(InputError, match="nowhere"):
        linker.initialize(encoder_loader=encoder_from_path(str(tmp_path / "nowhere")))


def test_spacy_shape_requires_and_assigns():
    nlp = spacy.blank("en")
    nlp.add_pipe("sap_linker")
    summary = nlp.analyze_pipes()["summary"]["sap_linker"]
    assert summary["requires"] == ["doc.ents"]
    assert set(summary["assigns"]) == {"token.ent_kb_id", "span._.kb_candidates", "span._.kb_parts"}


def test_loaders_are_registered_misc_functions():
    from spacy.util import registry

    assert registry.misc.get("spacy_el.EncoderFromPath.v1") is encoder_from_path
    assert registry.misc.get("spacy_el.IndexFromDir.v1") is index_from_dir
    assert registry.misc.get("spacy_el.IndexFromKB.v1") is index_from_kb


def test_to_bytes_from_bytes_links_the_same_without_the_paths(tiny_bert_dir, index_dir, tmp_path):
    enc_copy, idx_copy = tmp_path / "enc", tmp_path / "idx"
    shutil.copytree(tiny_bert_dir, enc_copy)
    shutil.copytree(index_dir, idx_copy)
    nlp = make_nlp(enc_copy, idx_copy, top_k=3)
    before = links(nlp(TEXT))
    data = nlp.to_bytes()
    shutil.rmtree(enc_copy)
    shutil.rmtree(idx_copy)
    other = spacy.blank("en")
    other.add_pipe("entity_ruler").add_patterns(PATTERNS)  # spaCy's ruler does not rebuild its matcher from bytes
    other.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 3})
    other.from_bytes(data, exclude=["entity_ruler"])
    assert links(other(TEXT)) == before
    # and what came from bytes saves again (the encoder's files outlive from_bytes)
    other.to_disk(tmp_path / "again")
    assert links(spacy.load(tmp_path / "again")(TEXT)) == before


def test_an_index_with_stored_vectors_round_trips_with_the_pipeline(tiny_bert_dir, stored_index_dir):
    """(That rescoring ranks as the exact search does is `tests/kb/test_vectors.py`: the random tiny
    BERT puts every name within 1e-4 of cosine 1, below float16's precision.)"""
    nlp = make_nlp(tiny_bert_dir, stored_index_dir, top_k=3)
    got = links(nlp(TEXT))
    assert nlp.get_pipe("sap_linker").index.vectors is not None and len(got) == 5
    other = spacy.blank("en")
    other.add_pipe("entity_ruler").add_patterns(PATTERNS)
    other.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 3})
    other.from_bytes(nlp.to_bytes(), exclude=["entity_ruler"])
    assert other.get_pipe("sap_linker").index.vectors is not None and links(other(TEXT)) == got


def test_a_loaded_pipeline_prefetches_its_index_unless_told_not_to(tiny_bert_dir, stored_index_dir, tmp_path):
    nlp = make_nlp(tiny_bert_dir, stored_index_dir, top_k=3)
    got = links(nlp(TEXT))
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    thread = loaded.get_pipe("sap_linker").index.prefetching
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive() and links(loaded(TEXT)) == got
    off = spacy.load(tmp_path / "pipeline", config={"components": {"sap_linker": {"performance": {"prefetch_index": False}}}})
    assert off.get_pipe("sap_linker").index.prefetching is None and links(off(TEXT)) == got


def test_candidates_survive_doc_bytes(nlp):
    doc = nlp(TEXT)
    from spacy.tokens import Doc

    back = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert links(back) == links(doc)
    assert all(isinstance(c, Candidate) for e in back.ents for c in e._.kb_candidates)


def test_pipe_honours_the_error_handler(tiny_bert_dir, index_dir, monkeypatch):
    nlp = make_nlp(tiny_bert_dir, index_dir)
    linker = nlp.get_pipe("sap_linker")

    def broken(texts, types=None):
        raise RuntimeError("encoder down")

    monkeypatch.setattr(linker, "_candidates", broken)
    with pytest.raises(RuntimeError, match="encoder down"):
        list(nlp.pipe([TEXT]))
    seen = []
    nlp.set_error_handler(lambda name, proc, docs, err: seen.append((name, len(docs), str(err))))
    assert list(nlp.pipe([TEXT, TEXT], batch_size=2)) == []
    assert seen and seen[0][0] == "sap_linker" and seen[0][2] == "encoder down"


def test_punctuation_and_whitespace_are_never_linked(nlp):
    from spacy.tokens import Span

    doc = nlp.make_doc("( diabetes ) ; -")
    doc.ents = [Span(doc, 0, 1, label="DISEASE"), Span(doc, 1, 2, label="DISEASE"), Span(doc, 3, 5, label="DISEASE")]
    doc = nlp.get_pipe("sap_linker")(doc)
    assert [(e.text, e.kb_id_) for e in doc.ents] == [("(", "NIL"), ("diabetes", "MESH:D003920"), ("; -", "NIL")]
    assert doc.ents[0]._.kb_candidates == []


def test_default_threshold_is_the_dev_chosen_one():
    from spacy_el.linker.pipe import DEFAULT_THRESHOLD

    nlp = spacy.blank("en")
    assert nlp.add_pipe("sap_linker").cfg["threshold"] == DEFAULT_THRESHOLD > 0


def test_initialize_builds_the_index_from_a_kb_file_with_mention_aliases(tiny_bert_dir, tmp_path):
    kb = tmp_path / "kb.tsv"
    kb.write_text("".join(f"{c}\t{n}\n" for c, n in NAMES), encoding="utf-8")
    train = tmp_path / "train.PubTator"
    train.write_text("1|t|Heart attack.\n1|a|Nothing else.\n1\t0\t12\tHeart attack\tDisease\tD006331\n\n",
                     encoding="utf-8")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    nlp.add_pipe("sap_linker")
    nlp.config["initialize"]["components"]["entity_ruler"] = {"patterns": PATTERNS}
    nlp.config["initialize"]["components"]["sap_linker"] = {
        "encoder_loader": {"@misc": "spacy_el.EncoderFromPath.v1", "path": str(tiny_bert_dir)},
        "index_loader": {"@misc": "spacy_el.IndexFromKB.v1", "kb": str(kb), "kb_format": "tsv",
                         "add_mentions": [str(train)], "prior_from": [str(train)], "prior_weight": 0.05}}
    nlp.initialize()
    linker = nlp.get_pipe("sap_linker")
    assert linker.index.meta["alias_files"] == ["train.PubTator"] and len(linker.index) == len(NAMES) + 1
    assert linker.index.prior == {"MESH:D006331": 1} and linker.index.prior_weight == 0.05
    heart = [e for e in nlp(TEXT).ents if e.text == "heart attack"][0]
    assert heart.kb_id_ == "MESH:D006331"
    assert heart._.kb_candidates[0] == Candidate("MESH:D006331", pytest.approx(1.0, abs=1e-4),
                                                 "heart attack", "train.PubTator")


def test_index_from_another_encoder_is_refused(tiny_bert_dir, index_dir, tmp_path):
    from spacy_el.sap.encoder import SapEncoder

    SapEncoder.load(tiny_bert_dir, device="cpu", pooling="mean").save(tmp_path / "mean_encoder")
    with pytest.raises(InputError, match="rebuild the index"):
        make_nlp(tmp_path / "mean_encoder", index_dir)


def test_scorer_reports_spacy_nel_scores(nlp):
    gold = {"diabetes": "MESH:D003920", "cancer": "MESH:D009369", "cardiac disease": "MESH:D006331",
            "heart attack": "MESH:D006331", "BRCA1": "NIL"}
    predicted = nlp(TEXT)
    reference = nlp.make_doc(TEXT)
    reference.ents = [reference.char_span(e.start_char, e.end_char, label=e.label_, kb_id=gold[e.text])
                      for e in predicted.ents]
    scores = nlp.get_pipe("sap_linker").score([Example(predicted, reference)])
    correct = sum(e.kb_id_ == gold[e.text] for e in predicted.ents if gold[e.text] != "NIL")
    wrong = sum(e.kb_id_ != gold[e.text] for e in predicted.ents if gold[e.text] != "NIL")
    assert scores["nel_micro_p"] == pytest.approx(correct / (correct + wrong + (predicted.ents[-1].kb_id_ != "NIL")))
    assert "DISEASE" in scores["nel_f_per_type"] and 0 < scores["nel_micro_f"] <= 1


def test_abbreviations_link_through_their_long_form(tiny_bert_dir, index_dir):
    text = "Germline mutations of adenomatous polyposis coli (APC) cause polyps; APC carriers are screened."
    plain = make_nlp(tiny_bert_dir, index_dir)
    resolved = make_nlp(tiny_bert_dir, index_dir, resolve_abbreviations=True)
    resolved.add_pipe("el_abbreviation_detector", first=True)
    apc = [e for e in resolved(text).ents if e.text == "APC"]
    assert len(apc) == 2 and all(e.kb_id_ == "OMIM:175100" for e in apc)
    assert all(e._.kb_candidates[0].name == "adenomatous polyposis coli" for e in apc)
    assert all(e._.kb_candidates[0].score == pytest.approx(1.0, abs=1e-4) for e in apc)
    assert all(e._.kb_candidates[0].score < 1 - 1e-6 for e in plain(text).ents if e.text == "APC")


def test_name_lookup_skips_the_encoder_for_kb_names_and_changes_no_link(tiny_bert_dir, index_dir, monkeypatch, tmp_path):
    nlp = make_nlp(tiny_bert_dir, index_dir)
    linker = nlp.get_pipe("sap_linker")
    embedded = []
    real = type(linker.encoder).embed

    def spy(self, texts, *args, **kwargs):
        embedded.append(list(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(linker.encoder), "embed", spy)
    text = "diabetes and cancer, and a heart attack with BRCA1."
    with_lookup = links(nlp(text))
    assert embedded == [["heart attack", "brca1"]]  # not KB names (as the uncased encoder reads them)
    # the tiny BERT's tokenizer is uncased: "Diabetes  MELLITUS" is the KB's "diabetes mellitus"
    assert list(linker.search.name_vectors(["Diabetes  MELLITUS", "diabetic"])) == ["Diabetes  MELLITUS"]
    without = links(make_nlp(tiny_bert_dir, index_dir, performance={"name_lookup": False})(text))
    assert [(t, l, k) for t, l, k, _ in with_lookup] == [(t, l, k) for t, l, k, _ in without]
    for (_, _, _, a), (_, _, _, b) in zip(with_lookup, without):
        assert [c.concept_id for c in a] == [c.concept_id for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)
    # a compressed index keeps no exact vectors: the encoder runs for every text
    from spacy_el.kb.index import ConceptIndex

    flat = ConceptIndex.load(index_dir)
    sq = ConceptIndex.from_vectors(flat.table, flat.cpu_index.reconstruct_n(0, len(flat)), "SQ8", encoder=linker.encoder)
    sq.save(tmp_path / "sq")
    embedded.clear()
    make_nlp(tiny_bert_dir, tmp_path / "sq")(text)
    assert sorted(embedded[0]) == ["brca1", "cancer", "diabetes", "heart attack"]


LINKER_MP_SCRIPT = """
import json, sys, torch
import spacy
from spacy_el.build import index_from_dir
from spacy_el.kb.index import Candidate
from spacy_el.sap.encoders import encoder_from_path

torch.set_num_threads(2)
nlp = spacy.blank("en")
nlp.add_pipe("entity_ruler").add_patterns(json.loads(sys.argv[3]))
linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0})
linker.initialize(encoder_loader=encoder_from_path(sys.argv[1]), index_loader=index_from_dir(sys.argv[2]))
texts = [sys.argv[4], "cancer and diabetes", "heart attack"] * 3
def links(docs):
    return [[(e.text, e.kb_id_, [tuple(c) for c in e._.kb_candidates],
              all(type(c) is Candidate for c in e._.kb_candidates)) for e in d.ents] for d in docs]
warm = links(nlp.pipe(texts))
forked = links(nlp.pipe(texts, n_process=2, batch_size=2))
print(json.dumps({"same": warm == forked, "candidates": all(x[3] for d in forked for x in d), "n": len(forked),
                  "encoder": type(linker.encoder).__name__}))
"""


@pytest.fixture(scope="module")
def onnx_dir(encoder, tmp_path_factory):
    """The tiny BERT exported to ONNX (fp32: same fingerprint, so the torch-built index fits)."""
    pytest.importorskip("onnxruntime")
    from spacy_el.sap.onnx import OnnxEncoder

    path = tmp_path_factory.mktemp("linker_onnx") / "encoder"
    OnnxEncoder.export(encoder, path)
    return path


@pytest.mark.parametrize("runtime", ["torch", "onnx", "torch, stored vectors"])
def test_n_process_2_after_a_warm_pass_gives_the_same_links_and_candidates(runtime, tiny_bert_dir, index_dir,
                                                                            request):
    """The parent links first (torch's and FAISS's OpenMP pools, or an ONNX Runtime session, are
    up), then forks two workers: they must finish (see `spacy_el.models`; an ONNX encoder
    re-creates its session in the child) and return the same links, as `Candidate`s. A fresh
    interpreter, so the runtimes run with their default threads."""
    import json
    import subprocess
    import sys

    encoder_dir = request.getfixturevalue("onnx_dir") if runtime == "onnx" else tiny_bert_dir
    if runtime == "torch, stored vectors":  # the forked workers share the parent's memory map of vectors.f16
        index_dir = request.getfixturevalue("stored_index_dir")
    out = subprocess.run([sys.executable, "-c", LINKER_MP_SCRIPT, str(encoder_dir), str(index_dir),
                          json.dumps(PATTERNS), TEXT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "same": True, "candidates": True, "n": 9, "encoder": "OnnxEncoder" if runtime == "onnx" else "SapEncoder"}


def test_the_taggers_alternatives_become_entities_when_the_kb_knows_them(tiny_bert_dir, index_dir):
    """The tagger's alternatives: spans of `doc.spans["ner_alternatives"]` that overlap no entity become entities, most
    probable first, when their best cosine reaches `alternatives_threshold`; then they are linked as
    any entity. Spans of labels the linker does not link, and spans over an entity, are left alone."""
    from spacy.tokens import SpanGroup

    text = "Familial adenomatous polyposis and neoplasms ran in the family with diabetes ."
    offered = [((0, 3), "DISEASE", 0.5),   # "Familial adenomatous polyposis": a KB name
               ((1, 3), "DISEASE", 0.6),   # "adenomatous polyposis": not a KB name
               ((4, 5), "GENE", 0.4),      # "neoplasms": a KB name, but of a label not linked
               ((9, 11), "DISEASE", 0.9),  # "with diabetes": over the entity "diabetes"
               ((5, 7), "DISEASE", 0.3)]   # "ran in"

    def run(nlp, scores=True, group=True):
        doc = nlp.make_doc(text)
        spans = SpanGroup(doc, name=ALTERNATIVES_KEY, spans=[Span(doc, s, e, label=lab) for (s, e), lab, _ in offered])
        if scores:
            spans.attrs["scores"] = [p for _, _, p in offered]
        if group:
            doc.spans[ALTERNATIVES_KEY] = spans
        for _, proc in nlp.pipeline:
            doc = proc(doc)
        return [(e.text, e.kb_id_) for e in doc.ents]

    plain = make_nlp(tiny_bert_dir, index_dir, labels=["DISEASE"])
    search = plain.get_pipe("sap_linker").search
    cosine = {t: c[0].score for t, c in search.candidates(["adenomatous polyposis", "ran in",
                                                              "familial adenomatous polyposis"], 1).items()}
    others = max(cosine["adenomatous polyposis"], cosine["ran in"])  # the tiny random BERT puts all close to 1
    assert cosine["familial adenomatous polyposis"] > others
    assert run(plain, group=False) == [("diabetes", "MESH:D003920")]  # a tagger that offers none

    strict = make_nlp(tiny_bert_dir, index_dir, labels=["DISEASE"],
                      alternatives_threshold=(cosine["familial adenomatous polyposis"] + others) / 2)
    assert run(strict) == [("Familial adenomatous polyposis", "OMIM:175100"), ("diabetes", "MESH:D003920")]
    loose = make_nlp(tiny_bert_dir, index_dir, labels=["DISEASE"], alternatives_threshold=-1.0)
    got = run(loose)  # every alternative qualifies: the most probable of two overlapping ones wins
    assert [t for t, _ in got] == ["adenomatous polyposis", "ran in", "diabetes"]
    without_scores = run(loose, scores=False)  # then the group's own order decides
    assert [t for t, _ in without_scores] == ["Familial adenomatous polyposis", "ran in", "diabetes"]
    assert all(kb for _, kb in got)


def test_alternatives_switched_on_when_a_saved_pipeline_is_loaded(tiny_bert_dir, index_dir, tmp_path):
    """A saved bilstm_ner + sap_linker pipeline loaded with the tagger's `alternatives_key` set to the
    span group the linker reads, through `spacy.load(..., config=...)`: the tagger offers spans, and the linker adopts exactly the
    offered spans that overlap no entity and reach the threshold (here: every linkable one, at threshold -1)."""
    from spacy.training import Example
    from spacy.util import fix_random_seed

    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": {
        "@architectures": "spacy_el.BiLSTMTagger.v1", "embed_width": 16, "hidden_width": 16, "depth": 1,
        "attrs": ["NORM", "SHAPE"], "rows": [200, 50], "include_static_vectors": False}})
    nlp.add_pipe("sap_linker", config={"threshold": 0.0}).initialize(
        encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(index_dir)))
    train = [("Patients with diabetes and cancer .", [(14, 22, "DISEASE"), (27, 33, "DISEASE")]),
             ("No cardiac disease was seen .", [(3, 18, "DISEASE")])]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in train]
    fix_random_seed(0)
    nlp.get_pipe("bilstm_ner").initialize(lambda: examples, nlp=nlp)
    for _ in range(3):  # barely trained: its spans stay uncertain
        nlp.update(examples, exclude=["sap_linker"])
    nlp.to_disk(tmp_path / "pipeline")
    texts = ["Patients with cancer and cardiac disease .", "Diabetes was seen ."]

    plain = spacy.load(tmp_path / "pipeline")
    assert all(ALTERNATIVES_KEY not in doc.spans for doc in plain.pipe(texts))
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {
        "bilstm_ner": {"alternatives_key": ALTERNATIVES_KEY, "alternatives_min_prob": 0.01},
        "sap_linker": {"alternatives_threshold": -1.0}}})
    offered = grown = 0
    for doc, before in zip(loaded.pipe(texts), plain.pipe(texts)):
        ents = {(e.start, e.end) for e in doc.ents}
        assert {(e.start, e.end) for e in before.ents} <= ents
        taken = {t for s, e in {(e.start, e.end) for e in before.ents} for t in range(s, e)}
        for span in doc.spans[ALTERNATIVES_KEY]:  # most probable first: adopted unless it overlaps what came before
            spans = set(range(span.start, span.end))
            adopted = not spans & taken and any(c.isalnum() for c in span.text)  # punctuation is never linked
            assert ((span.start, span.end) in ents) == adopted
            taken |= spans if adopted else set()
            offered += 1
        grown += len(doc.ents) > len(before.ents)
        assert all(e.kb_id_ for e in doc.ents)
    assert offered and grown
