import pytest

from spacy_el.corpora.pubtator import LinkingQuery
from spacy_el.evaluate import accuracy_at_k, first_correct_rank, missing_from_kb


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
