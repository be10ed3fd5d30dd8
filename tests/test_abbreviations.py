from __future__ import annotations

import pytest
import spacy

from spacy_el.abbreviations import best_long_form_start, find_definitions, is_short_form
from spacy_el.corpora.pubtator import read_pubtator


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("el_abbreviation_detector")
    return nlp


@pytest.fixture(scope="module")
def apc_doc(nlp, shared_data):
    corpus = read_pubtator(shared_data / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    (doc,) = [d for d in corpus.docs if d.pmid == "8931709"]
    assert "adenomatous polyposis coli (APC)" in doc.text
    return nlp(doc.text)


def test_real_ncbi_abstract(apc_doc):
    defs = {short.text: long.text for short, long in apc_doc._.el_abbreviations}
    assert defs["APC"] == "adenomatous polyposis coli"
    assert defs["FAP"] == "Familial adenomatous polyposis"
    # S&H alone would keep the shortest match, "adenomatous polyposis coli"
    assert defs["AAPC"] == "attenuated adenomatous polyposis coli"
    # every occurrence of APC is resolved, including the one in the title before the definition
    apc = [s for s, _ in apc_doc._.el_abbreviations if s.text == "APC"]
    assert len(apc) == sum(t.text == "APC" for t in apc_doc) >= 3
    assert apc[0].start < 10
    assert all(s._.el_long_form.text == "adenomatous polyposis coli" for s in apc)
    # the extension is keyed by offsets: a fresh Span over the same tokens sees it
    assert apc_doc[apc[1].start:apc[1].end]._.el_long_form.text == "adenomatous polyposis coli"
    starts = [s.start for s, _ in apc_doc._.el_abbreviations]
    assert starts == sorted(starts)


@pytest.mark.parametrize("text,short,long", [
    ("Patients with multiple myeloma (MM) were treated.", "MM", "multiple myeloma"),
    ("Thrombosis of the superior sagittal sinus (SSS) was seen.", "SSS", "superior sagittal sinus"),
    # initials and S&H's shortest match agree
    ("Cells were stained with tetrazolium chloride (TC).", "TC", "tetrazolium chloride"),
    # initials that do not spell the short form leave S&H's match alone
    ("It causes spinocerebellar ataxia type 1 (SCA1).", "SCA1", "spinocerebellar ataxia type 1"),
])
def test_initials_prefer_the_full_long_form(nlp, text, short, long):
    defs = {s.text: l.text for s, l in nlp(text)._.el_abbreviations}
    assert defs[short] == long


def test_short_form_before_long_form(nlp):
    doc = nlp("Mutations in APC (adenomatous polyposis coli) cause polyps. APC is a tumour suppressor.")
    pairs = [(s.text, l.text) for s, l in doc._.el_abbreviations]
    assert pairs == [("APC", "adenomatous polyposis coli")] * 2


def test_no_abbreviation(nlp):
    doc = nlp("The patient (a 45 year old man) was treated with aspirin (daily) for two weeks.")
    assert doc._.el_abbreviations == []
    assert all(t.doc[t.i:t.i + 1]._.el_long_form is None for t in doc)


def test_definition_does_not_cross_sentence(nlp):
    doc = nlp("Cells lacked the kinase. The mutant mice (ATM) died.")
    assert [(s.text, l.text) for s, l in doc._.el_abbreviations] == []


def test_empty_and_long_docs(nlp):
    assert nlp("")._.el_abbreviations == []
    text = " ".join(["Familial adenomatous polyposis (FAP) is common. FAP causes cancer."] * 500)
    doc = nlp(text)
    assert len(doc._.el_abbreviations) == 1000  # first definition wins; every FAP resolved


def test_unprocessed_doc_default(nlp):
    doc = spacy.blank("en")("No detector ran (here).")
    assert list(doc._.el_abbreviations) == []


def test_disk_round_trip(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.pipe_names == ["el_abbreviation_detector"]
    doc = loaded("Wilms tumour (WT) is a kidney cancer.")
    assert [(s.text, l.text) for s, l in doc._.el_abbreviations] == [("WT", "Wilms tumour")]
    assert nlp.get_pipe("el_abbreviation_detector").from_bytes(b"") is not None


def test_pairs_and_long_forms_survive_doc_bytes_and_n_process_2(nlp):
    """A Span cannot be serialized: the pairs are kept as token offsets, so `Doc.to_bytes` and
    `nlp.pipe(n_process=2)` (which ships docs back as bytes) give the same pairs and long forms."""
    from spacy.tokens import Doc

    texts = ["Wilms tumour (WT) is a kidney cancer; WT recurs.", "", "No definition here.",
             "Familial adenomatous polyposis (FAP) and FAP kindreds."]

    def pairs(doc):
        return [(s.text, s.start, l.text, s._.el_long_form.text) for s, l in doc._.el_abbreviations]

    expected = [pairs(nlp(t)) for t in texts]
    assert expected[0] == [("WT", 3, "Wilms tumour", "Wilms tumour"), ("WT", 10, "Wilms tumour", "Wilms tumour")]
    restored = [Doc(nlp.vocab).from_bytes(nlp(t).to_bytes()) for t in texts]
    assert [pairs(d) for d in restored] == expected
    assert [pairs(d) for d in nlp.pipe(texts, n_process=2)] == expected
    doc = nlp(texts[0])
    doc[0:2]._.el_long_form = doc[3:4]  # set by hand: read back, kept beside the detector's pairs
    assert doc[0:2]._.el_long_form.text == "WT" and doc[3:4]._.el_long_form.text == "Wilms tumour"
    doc[0:2]._.el_long_form = None
    assert doc[0:2]._.el_long_form is None and len(doc._.el_abbreviations) == 2


def test_helpers():
    assert is_short_form("APC") and is_short_form("G6PD") and not is_short_form("A")
    assert not is_short_form("(x)") and not is_short_form("a b c")
    long = "the adenomatous polyposis coli"
    assert long[best_long_form_start("APC", long):] == "adenomatous polyposis coli"
    assert best_long_form_start("XYZ", long) is None


def test_find_definitions_with_trailing_text_in_parens(nlp):
    doc = nlp("Huntington disease (HD; a neurodegenerative disorder) is inherited.")
    assert [(s.text, l.text) for s, l in find_definitions(doc)] == [("HD", "Huntington disease")]


def test_propagate_ents_tags_every_short_form_of_an_entity_long_form():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Disease", "pattern": "familial adenomatous polyposis"},
                        {"label": "Disease", "pattern": "colorectal cancer"}])
    nlp.add_pipe("el_abbreviation_detector", config={"propagate_ents": True})
    text = ("Patients with familial adenomatous polyposis (FAP) develop colorectal cancer. "
            "FAP is inherited; the tumour suppressor APC (adenomatous polyposis coli) is mutated in FAP.")
    doc = nlp(text)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("familial adenomatous polyposis", "Disease"), ("FAP", "Disease"), ("colorectal cancer", "Disease"),
        ("FAP", "Disease"), ("FAP", "Disease")]  # APC's long form is no entity: APC stays untagged
    nlp.get_pipe("el_abbreviation_detector").propagate_ents = False
    assert [e.text for e in nlp(text).ents] == ["familial adenomatous polyposis", "colorectal cancer"]
    assert nlp("").ents == ()
