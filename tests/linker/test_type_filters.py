"""`sap_linker`'s `type_filters`: an entity label linked only to concepts of its allowed types,
top_k candidates still returned, the types travel with the pipeline, unknown names refused."""
from __future__ import annotations

import pytest
import spacy

from spacy_el.build import index_from_dir
from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.types import ConceptTypes
from spacy_el.sap.encoders import encoder_from_path

NAMES = [("MESH:D003920", "diabetes mellitus"), ("MESH:D009369", "cancer"), ("MESH:D006331", "heart diseases"),
         ("MESH:D001241", "aspirin"), ("MESH:D008687", "metformin"), ("MESH:D004317", "doxorubicin")]
CHEMICALS = {"MESH:D001241", "MESH:D008687", "MESH:D004317"}


@pytest.fixture(scope="module")
def index_dir(tiny_bert_dir, tmp_path_factory):
    from spacy_el.sap.encoder import SapEncoder

    index = ConceptIndex.build(ConceptTable.from_rows(NAMES), SapEncoder.load(tiny_bert_dir, device="cpu"),
                               use_gpu=False)
    index.types = ConceptTypes({cid: ["CHEM"] if cid in CHEMICALS else ["DISO"] for cid, _ in NAMES})
    path = tmp_path_factory.mktemp("typed") / "index"
    index.save(path)
    return path


def make_nlp(tiny_bert_dir, index_dir, type_filters):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "Chemical", "pattern": "diabetes mellitus"},
                                               {"label": "Disease", "pattern": "cancer"}])
    nlp.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 3, "type_filters": type_filters}).initialize(
        encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(index_dir)))
    return nlp


def test_a_label_links_only_to_its_types_with_top_k_candidates(tiny_bert_dir, index_dir, tmp_path):
    nlp = make_nlp(tiny_bert_dir, index_dir, {"Chemical": ["CHEM"]})
    doc = nlp("Is diabetes mellitus a risk for cancer?")
    chem, dis = doc.ents
    assert chem.label_ == "Chemical" and len(chem._.kb_candidates) == 3
    assert {c.concept_id for c in chem._.kb_candidates} == CHEMICALS and chem.kb_id_ in CHEMICALS
    assert dis.kb_id_ == "MESH:D009369"  # no filter for Disease: the exact name wins
    nlp.to_disk(tmp_path / "nlp")
    again = spacy.load(tmp_path / "nlp")
    assert again.get_pipe("sap_linker").cfg["type_filters"] == {"Chemical": ["CHEM"]}
    assert [e.kb_id_ for e in again("Is diabetes mellitus a risk for cancer?").ents] == [e.kb_id_ for e in doc.ents]


def test_unknown_type_names_are_refused_naming_the_setting(tiny_bert_dir, index_dir):
    with pytest.raises(InputError, match=r"\[components.sap_linker\] type_filters.Chemical: unknown type name"):
        make_nlp(tiny_bert_dir, index_dir, {"Chemical": ["CHEMICALS"]})
