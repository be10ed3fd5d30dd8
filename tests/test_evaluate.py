import pytest

from spacy_el.corpora.pubtator import LinkingQuery
from spacy_el.evaluate import (accuracy_at_k, concept_ids, document_concept_errors, document_concept_scores,
                               end_to_end_scores,
                               first_correct_rank, linking_scores, missing_from_kb, span_scores)


def test_accuracy_at_k_counts_any_shared_id():
    ranked = [
        ["MESH:D000001", "MESH:D000002"],  # correct at 1
        ["MESH:D000009", "MESH:C567755|OMIM:613097"],  # multi-id concept matches gold OMIM at 2
        ["MESH:D000005"] * 5 + ["MESH:D000006"],  # correct only at rank 6
        [],  # no candidates
    ]
    gold = [["MESH:D000001"], "613097", ["D000006"], ["MESH:D000007"]]
    out = accuracy_at_k(ranked, gold, ks=(1, 5, 10))
    assert out == {"acc@1": 25.0, "acc@5": 50.0, "acc@10": 75.0, "n": 4}


def test_first_correct_rank_and_alternative_gold():
    assert first_correct_rank(["D000001", "D000002+D000003"], ["MESH:D000009", "MESH:D000003"]) == 1
    assert first_correct_rank(["D000001"], "D000002") is None


def test_accuracy_input_errors():
    with pytest.raises(ValueError):
        accuracy_at_k([["D000001"]], [])
    assert accuracy_at_k([], [])["n"] == 0


def test_missing_from_kb():
    queries = [
        LinkingQuery("a", ["OMIM:613097"], "1", 0, 1, "Disease"),
        LinkingQuery("b", ["MESH:D999999"], "1", 0, 1, "Disease"),
    ]
    assert missing_from_kb(queries, ["C567755|613097", "D000001"]) == [1]
    assert missing_from_kb(["D000001", ["D000002", "D000001"]], ["MESH:D000001"]) == []


# ---------------------------------------------------------------------- end to end scorer
# A hand-made corpus of three documents (offsets only matter as keys).
GOLD = [
    ("1", 0, 8, "Disease", "D003920"),            # g1 diabetes
    ("1", 13, 19, "Disease", "D009369"),          # g2 cancer
    ("1", 21, 40, "Disease", "C567755"),          # g3 gold MeSH id of a MeSH+OMIM concept
    ("1", 45, 70, "Disease", "D001943|D010051"),  # g4 composite: breast and ovarian cancer
    ("1", 75, 80, "Disease", "-1"),               # g5 NIL
    ("1", 85, 95, "Disease", "D006331"),          # g6 heart disease
    ("2", 0, 5, "Disease", "OMIM:175100"),        # g7
    ("2", 10, 20, "Disease", "D003920"),          # g8 (missed)
    ("3", 0, 4, "Disease", "C567755"),            # g9 the concept's MeSH id ...
    ("3", 10, 14, "Disease", "OMIM:613097"),      # g10 ... and its OMIM id on another mention
    ("3", 20, 30, "Disease", "D000002+D000003"),  # g11 joint ids (missed)
]
PRED = [
    ("1", 0, 8, "Disease", "MESH:D003920"),              # p1 right span, right concept
    ("1", 13, 19, "Disease", "MESH:D006331"),            # p2 right span, wrong concept
    ("1", 21, 40, "Disease", "MESH:C567755|OMIM:613097"),  # p3 multi-id concept matches g3
    ("1", 45, 70, "Disease", "MESH:D010051"),            # p4 one part of the composite
    ("1", 75, 80, "Disease", "MESH:D012345"),            # p5 a concept on the NIL gold span
    ("1", 85, 94, "Disease", "MESH:D006331"),            # p6 span off by one char
    ("1", 100, 105, "Disease", "NIL"),                   # p7 spurious span, linked to NIL
    ("2", 0, 5, "Disease", "175100"),                    # p8 bare OMIM number
    ("2", 30, 35, "Disease", "MESH:D000001"),            # p9 spurious span and concept
    ("3", 0, 4, "Disease", "MESH:C567755|OMIM:613097"),  # p10 covers g9 and g10's ids
]


def test_span_scores_by_hand():
    # gold spans g1..g11 (11), predicted p1..p10 (10); exact: p1 p2 p3 p4 p5 p8 p10 (7)
    s = span_scores(GOLD, PRED)
    assert (s["tp"], s["n_pred"], s["n_gold"]) == (7, 10, 11)
    assert s["p"] == pytest.approx(70.0) and s["r"] == pytest.approx(700 / 11)
    assert s["f"] == pytest.approx(200 * 7 / 21)  # 2 tp / (n_pred + n_gold)


def test_linking_scores_by_hand():
    # gold with a concept: all but g5 (10); predicted with a concept: all but p7 (9);
    # right: p1, p3 (any id), p4 (composite part), p8 (OMIM spelling), p10 = 5
    s = linking_scores(GOLD, PRED)
    assert (s["tp"], s["n_pred"], s["n_gold"]) == (5, 9, 10)
    assert s["p"] == pytest.approx(500 / 9) and s["r"] == pytest.approx(50.0)
    assert s["f"] == pytest.approx(100 * 10 / 19)


def test_document_concept_scores_by_hand():
    # doc 1: gold {D003920 D009369 C567755 D001943 D010051 D006331} (NIL left out); predicted
    #   {D003920} {D006331} {C567755|613097} {D010051} {D012345} (p6 repeats D006331, p7 is NIL):
    #   4 of 5 right (p2's concept is in the document, so it counts here), 4 of 6 gold found
    # doc 2: gold {OMIM:175100 D003920}, predicted {OMIM:175100} {D000001}: 1 of 2, 1 of 2
    # doc 3: gold {C567755 OMIM:613097 D000002 D000003}, predicted {C567755|613097}: 1 of 1, 2 of 4
    s = document_concept_scores(GOLD, PRED)
    assert (s["tp_pred"], s["n_pred"], s["tp"], s["n_gold"], s["n_docs"]) == (6, 8, 7, 12, 3)
    assert s["p"] == pytest.approx(75.0) and s["r"] == pytest.approx(700 / 12)
    assert s["f"] == pytest.approx(65.625)


def test_end_to_end_scores_groups_and_labels():
    out = end_to_end_scores(GOLD, PRED)
    assert set(out) == {"spans", "linking", "doc_concepts", "doc_concept_errors"}
    assert out["spans"] == span_scores(GOLD, PRED)
    # a wrong label spoils the span (labels compared when every annotation has one) ...
    relabelled = [("1", 0, 8, "Chemical", "MESH:D003920")] + PRED[1:]
    assert span_scores(GOLD, relabelled)["tp"] == 6 and linking_scores(GOLD, relabelled)["tp"] == 4
    assert span_scores(GOLD, relabelled, labels=False)["tp"] == 7
    # ... and unlabelled 4-tuples compare offsets only
    unlabelled = [(d, s, e, c) for d, s, e, _, c in PRED]
    assert span_scores(GOLD, unlabelled)["tp"] == 7
    # a document with gold but no prediction counts in recall; nothing at all scores 0
    assert document_concept_scores(GOLD, [])["r"] == 0.0
    assert span_scores([], [])["f"] == 0.0
    assert document_concept_scores(GOLD, PRED, doc_ids=["1", "2", "3", "4"])["n_docs"] == 4


def test_document_concept_errors_by_hand():
    # missed (12 gold ids - 7 found = 5): doc 1 D009369 (p2 has g2's exact span, another concept) and
    #   D001943 (p4 has the composite's span, its other part): linked; doc 2 D003920 (g8: nothing
    #   touches 10-20) and doc 3 D000002, D000003 (g11): untagged
    # wrong (8 predicted - 6 right = 2): {D012345} on g5's exact (NIL) span: linked; {D000001} (p9)
    #   touches no gold mention: spurious
    e = document_concept_errors(GOLD, PRED)
    assert e == {"missed": {"untagged": 3, "boundary": 0, "linked": 2},
                 "wrong": {"spurious": 1, "boundary": 0, "linked": 1}}
    s = document_concept_scores(GOLD, PRED)
    assert sum(e["missed"].values()) == s["n_gold"] - s["tp"]
    assert sum(e["wrong"].values()) == s["n_pred"] - s["tp_pred"]
    # a span cut short: the gold concept is missed at the boundary and the prediction is wrong there
    cut = document_concept_errors([("9", 0, 20, "D000004")], [("9", 0, 12, "D000005"), ("9", 30, 40, "NIL")])
    assert cut == {"missed": {"untagged": 0, "boundary": 1, "linked": 0},
                   "wrong": {"spurious": 0, "boundary": 1, "linked": 0}}
    assert document_concept_errors([], []) == {"missed": {"untagged": 0, "boundary": 0, "linked": 0},
                                               "wrong": {"spurious": 0, "boundary": 0, "linked": 0}}


def test_concept_ids_leave_out_nil():
    assert concept_ids("D003110|-1") == {"MESH:D003110"}
    assert concept_ids("NIL") == set() and concept_ids("-1") == set() and concept_ids(" ") == set()
    assert concept_ids("CUI-less", nil_ids={"CUI-less"}) == set()
