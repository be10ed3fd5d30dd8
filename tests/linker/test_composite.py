"""Composite mentions: coordination split on NCBI-disease dev's own composite mentions, and
`sap_linker` linking each part (MiniLM over the MEDIC names of those concepts) with the joined
`kb_id_`, `ent._.kb_parts`, the setting that turns it off and both round trips of the parts."""
from __future__ import annotations

import pytest
import spacy

from spacy_el.linker.composite import split_coordination


@pytest.mark.parametrize("text,parts", [
    ("breast and ovarian cancer", ["breast cancer", "ovarian cancer"]),
    ("colorectal, endometrial and ovarian cancers",
     ["colorectal cancers", "endometrial cancers", "ovarian cancers"]),
    ("brain, breast, and prostate cancer", ["brain cancer", "breast cancer", "prostate cancer"]),
    ("breast and/or ovarian cancer", ["breast cancer", "ovarian cancer"]),
    ("C6 or C7 deficiency", ["C6 deficiency", "C7 deficiency"]),
    ("stage II and stage III colorectal carcinomas",
     ["stage II colorectal carcinomas", "stage III colorectal carcinomas"]),
    ("impairments of learning and memory", ["impairments of learning", "impairments of memory"]),
    ("retinal, cerebellar and spinal haemangioblastomas",
     ["retinal haemangioblastomas", "cerebellar haemangioblastomas", "spinal haemangioblastomas"]),
])
def test_coordinated_mentions_split_into_parts_sharing_the_head(text, parts):
    assert split_coordination(text) == parts


@pytest.mark.parametrize("text", ["cancer", "ataxia-telangiectasia", "cancer and diabetes", "breast/ovarian cancer",
                                  "", " and cancer"])
def test_mentions_without_a_shared_head_are_not_split(text):
    assert split_coordination(text) is None


def test_every_ncbi_dev_composite_mention_with_parts_splits(shared_data):
    from spacy_el.corpora.pubtator import read_pubtator

    corpus = read_pubtator(shared_data / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    composite = [m for m in corpus.mentions if m.type == "CompositeMention" and m.is_composite]
    assert len(composite) >= 12
    split = [m for m in composite if split_coordination(m.text)]
    assert len(split) >= 0.9 * len(composite)
    assert all(len(split_coordination(m.text)) >= len(m.raw_ids.split("|")) - 1 for m in split)


@pytest.fixture(scope="module")
def ncbi_nlp(shared_data, tmp_path_factory):
    """entity ruler over NCBI dev's composite mentions + sap_linker with MiniLM over the MEDIC
    names of the concepts those mentions and their parts name (plus "Hereditary Breast and
    Ovarian Cancer Syndrome", the one-concept reading)."""
    from spacy_el.build import index_from_dir
    from spacy_el.corpora.pubtator import read_pubtator
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.readers import read_medic
    from spacy_el.kb.table import ConceptTable
    from spacy_el.models import minilm_dir
    from spacy_el.sap.encoders import encoder_from_path, load_encoder

    corpus = read_pubtator(shared_data / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    wanted = {i for m in corpus.mentions if m.is_composite for i in m.ids} | {"MESH:D061325"}
    medic = read_medic(shared_data / "dictionaries" / "medic_06Jul2012.txt")
    table = ConceptTable.from_rows(r for r in medic.rows() if set(r[0].split("|")) & wanted)
    encoder = load_encoder(minilm_dir())
    path = tmp_path_factory.mktemp("composite") / "index"
    ConceptIndex.build(table, encoder, use_gpu=False).save(path)
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"}).add_patterns(
        [{"label": "Disease", "pattern": m.text} for m in corpus.mentions if m.type == "CompositeMention"])
    nlp.add_pipe("sap_linker", config={"threshold": 0.0}).initialize(
        encoder_loader=encoder_from_path(str(minilm_dir())), index_loader=index_from_dir(str(path)))
    return nlp, corpus


def test_breast_and_ovarian_cancer_in_a_dev_abstract_links_both_parts(ncbi_nlp):
    nlp, corpus = ncbi_nlp
    pdoc, gold = next((d, m) for d in corpus.docs for m in d.mentions if m.text == "breast and ovarian cancer")
    doc = nlp(pdoc.text)
    ent = next(e for e in doc.ents if (e.start_char, e.end_char) == (gold.start, gold.end))
    parts = [cands[0].concept_id for _, cands in ent._.kb_parts]
    assert "MESH:D001943" in parts[0].split("|") and "MESH:D010051" in parts[1].split("|")
    assert ent.kb_id_ == "|".join(parts)
    assert [text for text, _ in ent._.kb_parts] == ["breast cancer", "ovarian cancer"]
    assert [c.concept_id for c in ent._.kb_candidates] == parts
    # the parts survive Doc.to_bytes and come back as Candidates
    again = spacy.tokens.Doc(nlp.vocab).from_bytes(doc.to_bytes())
    back = next(e for e in again.ents if e.start_char == ent.start_char)
    assert back._.kb_parts == ent._.kb_parts and type(back._.kb_parts[0][1][0]).__name__ == "Candidate"


def test_composite_off_links_the_whole_text_to_one_concept(ncbi_nlp):
    nlp, _ = ncbi_nlp
    linker = nlp.get_pipe("sap_linker")
    linker.cfg["composite"] = False
    try:
        ent = nlp("Mutations raise the risk of breast and ovarian cancer.").ents[0]
    finally:
        linker.cfg["composite"] = True
    assert ent._.kb_parts is None and ent.kb_id_ in set(linker.index.table.ids)
    assert [c.concept_id for c in ent._.kb_candidates][0] == ent.kb_id_


def test_most_dev_composite_mentions_are_fully_right(ncbi_nlp):
    """Every gold part (NCBI's `|` ids) named by a predicted part, and no extra part."""
    from spacy_el.ids import ids_match

    nlp, corpus = ncbi_nlp
    golds = [m for m in corpus.mentions if m.type == "CompositeMention" and m.is_composite]
    right = 0
    for m in golds:
        ent = next((e for e in nlp(m.text).ents if e.text == m.text), None)
        predicted = [c[0].concept_id for _, c in ent._.kb_parts] if ent is not None and ent._.kb_parts else []
        gold = m.raw_ids.split("|")
        right += len(predicted) == len(gold) and all(any(ids_match(p, g) for p in predicted) for g in gold)
    assert right >= 0.5 * len(golds), (right, len(golds))
