"""displaCy helper: labels carry the linked id and name; the page is written atomically."""
from __future__ import annotations

import spacy
from spacy.tokens import Span

import spacy_el.linker.pipe  # noqa: F401  (registers Span._.kb_candidates)
from spacy_el.kb.index import Candidate
from spacy_el.linker.display import link_label, render_links, write_html


def linked_doc():
    nlp = spacy.blank("en")
    doc = nlp("Colorectal cancer and an unknown syndrome.")
    doc.ents = [Span(doc, 0, 2, label="Disease", kb_id="DOID:9256"), Span(doc, 5, 6, label="Disease", kb_id="NIL")]
    doc.ents[0]._.kb_candidates = [Candidate("DOID:9256", 0.97, "colorectal cancer", "kb")]
    doc.ents[1]._.kb_candidates = [Candidate("DOID:225", 0.41, "syndrome", "kb")]
    return doc


def test_labels_show_id_and_best_name_only_when_linked():
    doc = linked_doc()
    assert link_label(doc.ents[0]) == "Disease · DOID:9256 colorectal cancer"
    assert link_label(doc.ents[1]) == "Disease · NIL"  # below threshold: the candidate is not the link


def test_page_is_written(tmp_path):
    html = render_links([linked_doc()], page=False)
    assert "Disease · DOID:9256 colorectal cancer" in html and "Colorectal" in html
    path = write_html([linked_doc(), spacy.blank("en")("")], tmp_path / "links.html")
    assert "<!DOCTYPE html>" in path.read_text() and [p.name for p in tmp_path.iterdir()] == ["links.html"]
