"""kb_span_extender: widens an entity to the longest KB name around it (within its token budget),
leaves other entities, labels and entity-free docs alone, round-trips, runs in two processes, and
names the setting to fix when no gazetteer marked the names."""
from __future__ import annotations

import pytest
import spacy
from spacy.tokens import Span

KB = "MESH:D020326\tmigraine without aura\nMESH:D008881\tmigraine\nMESH:D012595\tlocalized scleroderma\n" \
     "MESH:D012594\tscleroderma\nMESH:D1\tvery long named migraine without aura syndrome\n"
TEXT = "Migraine without aura and localized scleroderma, then migraine again ."


def tag(doc, *spans):
    """Stand-in for a tagger that stops short of the modifiers: entities at these token spans."""
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in spans]
    return doc


@pytest.fixture
def nlp(tmp_path):
    kb = tmp_path / "kb.tsv"
    kb.write_text(KB)
    nlp = spacy.blank("en")
    nlp.add_pipe("kb_gazetteer")
    nlp.get_pipe("kb_gazetteer").initialize(kb=str(kb), kb_format="tsv")
    nlp.add_pipe("kb_span_extender", config={"max_extra_tokens": 2})
    return nlp


def run(nlp, *spans, text=TEXT):
    doc = nlp.get_pipe("kb_gazetteer")(nlp.make_doc(text))
    return [(e.text, e.label_) for e in nlp.get_pipe("kb_span_extender")(tag(doc, *spans)).ents]


def test_entities_widen_to_the_longest_kb_name_within_budget(nlp):
    # "migraine" → "Migraine without aura" (+2 tokens; the 7-token name is past the budget),
    # "scleroderma" → "localized scleroderma"; the second "migraine" has no longer name around it
    assert run(nlp, (0, 1, "Disease"), (5, 6, "Disease"), (8, 9, "Disease")) == [
        ("Migraine without aura", "Disease"), ("localized scleroderma", "Disease"), ("migraine", "Disease")]
    # an entity already as long as the name, and one no name contains, stay as they are
    assert run(nlp, (0, 3, "Disease"), (3, 4, "Disease")) == [("Migraine without aura", "Disease"), ("and", "Disease")]
    # widened entities that would overlap another: the longest wins, no error
    assert run(nlp, (0, 1, "Disease"), (2, 3, "Disease")) == [("Migraine without aura", "Disease")]


def test_labels_limit_which_entities_widen_and_empty_docs_pass(nlp):
    nlp.get_pipe("kb_span_extender").labels = {"Disease"}
    assert run(nlp, (0, 1, "Chemical"), (5, 6, "Disease")) == [("Migraine", "Chemical"),
                                                               ("localized scleroderma", "Disease")]
    assert [e.text for e in nlp("").ents] == [] and [e.text for e in nlp("No names here .").ents] == []


def test_round_trips_and_two_processes_agree(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("kb_span_extender").max_extra_tokens == 2
    assert run(loaded, (0, 1, "Disease")) == [("Migraine without aura", "Disease")]
    texts = [TEXT, "", "scleroderma ."] * 4

    def widened(docs):
        return [[(e.start, e.end) for e in doc.ents] for doc in docs]

    docs = [tag(nlp.make_doc(t), (0, 1, "Disease")) if t else nlp.make_doc(t) for t in texts]
    one = widened(loaded.pipe([d.copy() for d in docs]))
    two = widened(loaded.pipe([d.copy() for d in docs], n_process=2))
    assert one == two and one[0] == [(0, 3)] and one[2] == [(0, 1)]


def test_missing_gazetteer_and_bad_budget_name_the_setting():
    nlp = spacy.blank("en")
    nlp.add_pipe("kb_span_extender")
    with pytest.raises(ValueError, match=r"kb_gazetteer.*spans_key"):
        nlp.get_pipe("kb_span_extender")(tag(nlp.make_doc(TEXT), (0, 1, "Disease")))
    assert nlp("entity-free text .").ents == ()  # no entities: nothing to widen, no names needed
    with pytest.raises(ValueError, match="max_extra_tokens = 0"):
        spacy.blank("en").add_pipe("kb_span_extender", config={"max_extra_tokens": 0})
