"""`spacy_el.BiomedicalTokenizer.v1`: the extra splits, every default boundary kept, the round
trip through a saved pipeline, and `convert-ner --tokenizer biomedical`."""
from __future__ import annotations

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_el.io import InputError
from spacy_el.ner.convert import convert_ner
from spacy_el.ner.tokenizer import blank

TEXT = ("Butylated hydroxyanisole (BHA)-induced tumours; thallium-201 imaging; diazepam- and morphine-induced "
        "sedation in Na(+)-K(+) transport, X-linked BRCA1 carriers (n=12), anti-inflammatory drugs [IL-6].")


def _boundaries(doc):
    return {t.idx for t in doc} | {t.idx + len(t) for t in doc}


def test_the_extra_splits_and_every_default_boundary_kept():
    default, bio = spacy.blank("en")(TEXT), blank("en", "biomedical")(TEXT)
    words = [t.text for t in bio]
    for piece in ("BHA", "thallium", "201", "diazepam", "Na"):
        assert piece in words
    assert "BHA)-induced" in [t.text for t in default] and "thallium-201" in [t.text for t in default]
    assert _boundaries(default) <= _boundaries(bio)
    assert bio.text == TEXT and "BRCA1" in words and "X" in words  # letters and digits stay together


def test_round_trips_with_the_pipeline(tmp_path):
    nlp = blank("en", "biomedical")
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.config["nlp"]["tokenizer"] == {"@tokenizers": "spacy_el.BiomedicalTokenizer.v1"}
    assert [t.text for t in loaded(TEXT)] == [t.text for t in nlp(TEXT)]
    fresh = blank("en", "biomedical")
    fresh.tokenizer.from_bytes(nlp.tokenizer.to_bytes())
    assert [t.text for t in fresh(TEXT)] == [t.text for t in nlp(TEXT)]
    with pytest.raises(ValueError, match="'default', 'biomedical'"):
        blank("en", "scispacy")


def test_convert_ner_reaches_the_chemical_inside(tmp_path):
    text = "Thallium-201 scans after (BHA)-induced injury."
    path = tmp_path / "corpus.txt"
    path.write_text(f"7|t|{text}\n7|a|None.\n7\t0\t8\tThallium\tChemical\tD013793\n"
                    f"7\t26\t29\tBHA\tChemical\tD002083\n7\t39\t45\tinjury\tDisease\tD014947\n\n")
    found = {}
    for tokenizer in ("default", "biomedical"):
        convert_ner(path, tmp_path / f"{tokenizer}.spacy", "pubtator", tokenizer=tokenizer)
        (doc,) = DocBin().from_disk(tmp_path / f"{tokenizer}.spacy").get_docs(blank("en", tokenizer).vocab)
        found[tokenizer] = [(e.text, e.label_) for e in doc.ents]
    assert found["default"] == [("injury", "Disease")]
    assert found["biomedical"] == [("Thallium", "Chemical"), ("BHA", "Chemical"), ("injury", "Disease")]
    with pytest.raises(InputError, match="--tokenizer"):
        convert_ner(path, tmp_path / "x.spacy", "pubtator", tokenizer="whitespace")
