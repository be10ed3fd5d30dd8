"""Viewer: displaCy labels carry the best KB name and score, concept ids link to their KB page per
prefix, the page holds every entity's candidates (table and hover) and is written atomically; a
real headless Chromium renders it (skipped where Chromium is not installed)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

import spacy_el.linker.pipe  # noqa: F401  (registers Span._.kb_candidates and kb_parts)
from spacy_el.kb.index import Candidate
from spacy_el.linker.display import kb_url, link_label, render_links, render_page, write_html

REPO = Path(__file__).resolve().parents[2]


def linked_doc():
    nlp = spacy.blank("en")
    doc = nlp("Colorectal cancer and an unknown syndrome, like breast and ovarian cancer.")
    composite = doc.text.index("breast and ovarian cancer")
    doc.ents = [Span(doc, 0, 2, label="Disease", kb_id="DOID:9256"), Span(doc, 5, 6, label="Disease", kb_id="NIL"),
                doc.char_span(composite, composite + 25, label="Disease", kb_id="MESH:D001943|MESH:D010051")]
    doc.ents[0]._.kb_candidates = [Candidate("DOID:9256", 0.97, "colorectal cancer", "kb"),
                                   Candidate("DOID:0080199", 0.81, "colorectal carcinoma", "NCBItrain.txt")]
    doc.ents[1]._.kb_candidates = [Candidate("DOID:225", 0.41, "syndrome", "kb")]
    parts = [("breast cancer", [Candidate("MESH:D001943", 0.99, "Breast Neoplasms", "kb")]),
             ("ovarian cancer", [Candidate("MESH:D010051", 0.98, "Ovarian Neoplasms", "kb")])]
    doc.ents[2]._.kb_parts = parts
    doc.ents[2]._.kb_candidates = [p[1][0] for p in parts]
    return doc


def test_labels_show_best_name_and_score_only_when_linked():
    doc = linked_doc()
    assert link_label(doc.ents[0]) == "Disease · colorectal cancer 0.97"
    assert link_label(doc.ents[1]) == "Disease"  # below threshold: the candidate is not the link
    assert link_label(doc.ents[2]) == "Disease · Breast Neoplasms 0.99 + Ovarian Neoplasms 0.98"


def test_concept_ids_link_to_their_kb_page_per_prefix():
    assert kb_url("MESH:D003920") == "https://meshb.nlm.nih.gov/record/ui?ui=D003920"
    assert kb_url("OMIM:175100") == "https://omim.org/entry/175100"
    assert kb_url("DOID:9256") == "https://disease-ontology.org/?id=DOID:9256"
    assert kb_url("UMLS:C0011849") == "https://uts.nlm.nih.gov/uts/umls/concept/C0011849"
    assert kb_url("NIL") is None and kb_url("FOO:1") is None
    assert kb_url("FOO:1", {"FOO": "https://foo.org/{}"}) == "https://foo.org/1"
    html = render_links([linked_doc()], page=False)
    assert 'href="https://disease-ontology.org/?id=DOID:9256"' in html and "colorectal cancer 0.97" in html


def test_page_lists_candidates_with_source_in_a_table_and_on_hover(tmp_path):
    page = render_page([linked_doc()])
    assert page.count('<tr id="ent-0-') == 3
    assert "colorectal carcinoma" in page and "NCBItrain.txt" in page and "0.810" in page
    assert 'title="0.970  colorectal cancer  (DOID:9256, kb)' in page
    assert "part “breast cancer”" in page and 'href="https://meshb.nlm.nih.gov/record/ui?ui=D010051"' in page
    path = write_html([linked_doc(), spacy.blank("en")("")], tmp_path / "links.html")
    assert "no entities" in path.read_text() and [p.name for p in tmp_path.iterdir()] == ["links.html"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    page = write_html([linked_doc()], tmp_path / "links.html")
    shot = tmp_path / "links.png"
    subprocess.run(["bash", str(REPO / "scripts" / "screenshot_html.sh"), str(page), str(shot)], check=True,
                   timeout=120, capture_output=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- nothing injected
MARKUP = {
    "text": "<b onmouseover=alert(1)>cancer</b> and zorblax",
    "name": "zorblax <img src=x onerror=alert(5)>",
    "id": 'MESH:D9"><script>alert(6)</script>',
    "source": "<svg onload=alert(7)>",
}
#: Elements and attributes the page's own templates (ours and displaCy's) write.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "section", "h2", "div", "span", "mark",
             "a", "table", "thead", "tbody", "tr", "th", "td", "p", "wbr", "br"}
PAGE_ATTRS = {"lang", "charset", "class", "style", "title", "data-ent", "id", "href", "target", "rel"}


class _Elements:
    """Every start tag of a page, as html.parser reads it."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        parser = HTMLParser(convert_charrefs=True)
        parser.handle_starttag = lambda tag, attrs: self.tags.append((tag, dict(attrs)))
        parser.handle_startendtag = parser.handle_starttag
        parser.handle_data = self.text.append
        parser.feed(page)
        parser.close()


def injected_doc():
    nlp = spacy.blank("en")
    doc = nlp(MARKUP["text"])
    start = doc.text.index("zorblax")
    doc.ents = [doc.char_span(start, start + 7, label="Disease", kb_id=MARKUP["id"])]
    doc.ents[0]._.kb_candidates = [Candidate(MARKUP["id"], 0.9, MARKUP["name"], MARKUP["source"])]
    return doc


def test_kb_strings_text_and_url_templates_never_become_markup():
    from urllib.parse import quote

    template = {"MESH": 'https://x.org/{}"><script>alert(8)</script><a href="'}
    for templates in (None, template):
        page = _Elements(render_page([injected_doc()], kb_url_template=templates))
        tags = {tag for tag, _ in page.tags}
        attrs = {name for _, a in page.tags for name in a}
        assert tags <= PAGE_TAGS, tags - PAGE_TAGS
        assert attrs <= PAGE_ATTRS, attrs - PAGE_ATTRS
        hrefs = [a["href"] for tag, a in page.tags if tag == "a"]
        local = quote('D9"><script>alert(6)</script>', safe="")
        base = "https://meshb.nlm.nih.gov/record/ui?ui=" if templates is None else "https://x.org/"
        assert hrefs and all(h == base + local + ("" if templates is None else template["MESH"][16:]) for h in hrefs)
        # every string reads back as the text it was: escaped, not dropped
        text = "".join(page.text)
        assert "<b onmouseover=alert(1)>cancer</b> and " in text
        assert MARKUP["name"] in text and MARKUP["id"] in text and MARKUP["source"] in text


def test_only_http_urls_are_linked():
    assert kb_url("MESH:D1", {"MESH": "javascript:alert(1)//{}"}) is None
    assert kb_url("MESH:D1 x", {"MESH": "https://x.org/{}"}) == "https://x.org/D1%20x"
