"""spaCy's own `entity_linker` trained with candidates from the FAISS index and a KB built from
the index's concept table; the KB/index mismatch is refused with the fix."""
from __future__ import annotations

import pytest
import spacy
from spacy.training import Example

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.linker.candidates import faiss_candidates, kb_from_index

NAMES = [
    ("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"),
    ("MESH:D009369", "neoplasms"), ("MESH:D009369", "cancer"),
    ("MESH:D006331", "heart diseases"), ("MESH:D006331", "cardiac disease"),
    ("OMIM:175100", "adenomatous polyposis coli"), ("OMIM:175100", "familial adenomatous polyposis"),
]
#: Real sentences (NCBI-disease style); the mention texts are KB names or near them.
TRAIN = [
    ("Insulin resistance is the hallmark of type 2 diabetes in obese adults.", "diabetes", "MESH:D003920"),
    ("Germline BRCA1 mutations raise the lifetime risk of cancer in carriers.", "cancer", "MESH:D009369"),
    ("Truncating APC mutations cause familial adenomatous polyposis in children.",
     "familial adenomatous polyposis", "OMIM:175100"),
    ("Smoking is a major risk factor for cardiac disease and stroke.", "cardiac disease", "MESH:D006331"),
]


@pytest.fixture(scope="module")
def paths(tiny_bert_dir, tmp_path_factory):
    from spacy_el.sap.encoder import SapEncoder

    encoder = SapEncoder.load(tiny_bert_dir, device="cpu")
    root = tmp_path_factory.mktemp("cands")
    ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False).save(root / "index")
    ConceptIndex.build(ConceptTable.from_rows([("DOID:1", "other disease")]), encoder,
                       use_gpu=False).save(root / "other")
    return str(tiny_bert_dir), str(root / "index"), str(root / "other")


def make_nlp(encoder: str, index: str, top_k: int = 4):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler")
    cands = {"index": index, "encoder": encoder, "top_k": top_k}
    nlp.add_pipe("entity_linker", config={
        "entity_vector_length": 32, "incl_prior": False, "candidates_batch_size": 8,
        "get_candidates": {"@misc": "spacy_el.FaissCandidates.v1", **cands},
        "get_candidates_batch": {"@misc": "spacy_el.FaissCandidatesBatch.v1", **cands}})
    return nlp


def examples(nlp):
    out = []
    for text, mention, cid in TRAIN:
        doc = nlp.make_doc(text)
        start = text.index(mention)
        out.append(Example.from_dict(doc, {"links": {(start, start + len(mention)): {cid: 1.0}},
                                           "entities": [(start, start + len(mention), "Disease")]}))
    return out


def test_kb_from_index_has_every_concept_with_its_vector_and_names(paths):
    encoder, index, _ = paths
    kb = kb_from_index(spacy.blank("en").vocab, ConceptIndex.load(index))
    assert sorted(kb.get_entity_strings()) == sorted({c for c, _ in NAMES})
    assert kb.entity_vector_length == 32
    assert [c.entity_ for c in kb.get_alias_candidates("cancer")] == ["MESH:D009369"]


def test_spacy_entity_linker_trains_on_faiss_candidates_and_links(paths):
    encoder, index, _ = paths
    spacy.util.fix_random_seed(0)
    nlp = make_nlp(encoder, index)
    egs = examples(nlp)
    nlp.config["initialize"]["components"]["entity_linker"] = {
        "kb_loader": {"@misc": "spacy_el.KBFromIndex.v1", "index": index, "encoder": encoder}}
    nlp.initialize(lambda: egs)
    nlp.get_pipe("entity_ruler").add_patterns([{"label": "Disease", "pattern": m} for _, m, _ in TRAIN])
    optimizer = nlp.resume_training()
    losses = []
    for _ in range(80):
        step = {}
        nlp.update(egs, sgd=optimizer, losses=step)
        losses.append(step["entity_linker"])
    assert losses[-1] < losses[0] / 2, losses
    linked = {ent.text: ent.kb_id_ for text, _, _ in TRAIN for ent in nlp(text).ents}
    assert linked == {mention: cid for _, mention, cid in TRAIN}


def test_candidates_are_index_concepts_in_kb_order_with_cosines_as_priors(paths):
    encoder, index, _ = paths
    nlp = make_nlp(encoder, index, top_k=2)
    kb = kb_from_index(nlp.vocab, ConceptIndex.load(index))
    doc = nlp.make_doc("Patients with diabetes mellitus.")
    cands = faiss_candidates(index, encoder, top_k=2)(kb, doc[2:4])
    assert len(cands) == 2 and cands[0].entity_ == "MESH:D003920"
    assert 0.99 <= cands[0].prior_prob <= 1.0 and cands[0].prior_prob >= cands[1].prior_prob
    assert len(cands[0].entity_vector) == 32


def test_a_kb_not_built_from_the_index_is_refused(paths):
    encoder, index, other = paths
    nlp = make_nlp(encoder, index)
    kb = kb_from_index(nlp.vocab, ConceptIndex.load(other))
    with pytest.raises(InputError, match="KB has no entity .*KBFromIndex"):
        faiss_candidates(index, encoder)(kb, nlp.make_doc("cancer")[0:1])
