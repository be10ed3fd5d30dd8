import pytest

from spacy_el.io import InputError
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.pairs import make_pairs, read_pairs, write_pairs


def table(rows):
    return ConceptTable.from_rows(rows)


def test_all_pairs_deduplicated_after_normalisation():
    t = table([("D1", "Heart Attack"), ("D1", "heart  attack"), ("D1", "MI"), ("D1", "myocardial infarction"),
               ("D2", "colon cancer")])
    pairs = make_pairs(t)
    d1 = sorted(tuple(sorted(p[1:])) for p in pairs if p[0] == "D1")
    assert d1 == sorted([("Heart Attack", "MI"), ("Heart Attack", "myocardial infarction"),
                         ("MI", "myocardial infarction")])
    # a concept with a single distinct name still takes part (as an in-batch negative)
    assert ("D2", "colon cancer", "colon cancer") in pairs
    assert ("D2", "colon cancer", "colon cancer") not in make_pairs(t, include_singletons=False)


def test_capped_and_seeded():
    t = table([("D1", f"name {i}") for i in range(20)])  # 190 pairs
    a, b, c = make_pairs(t, 50, seed=1), make_pairs(t, 50, seed=1), make_pairs(t, 50, seed=2)
    assert len(a) == 50 == len(set(a)) and a == b and a != c
    assert len(make_pairs(t, 500)) == 190
    with pytest.raises(InputError, match="max_pairs_per_concept"):
        make_pairs(t, 0)


def test_roundtrip(tmp_path):
    pairs = [("MESH:D1", "heart attack", "MI"), ("OMIM:1234", "x", "x")]
    write_pairs(tmp_path / "pairs.tsv", pairs)
    assert read_pairs(tmp_path / "pairs.tsv") == pairs
    with pytest.raises(InputError, match="tabs"):
        write_pairs(tmp_path / "bad.tsv", [("D1", "a\tb", "c")])
    assert not (tmp_path / "bad.tsv").exists()


@pytest.mark.parametrize("content, message", [
    (b"D1\ta\tb\nD2\ta\n", "line 2: expected 3 tab-separated columns"),
    (b"D1\ta\tb\tc\n", "line 1: expected 3"),
    (b"D1\ta\tb\n\nD2\t \tb\n", "line 3: empty concept id or name"),
    (b"D1\ta\tb\nD2\tcaf\xe9\tb\n", "line 2: not valid UTF-8"),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_pairs(path)
    assert str(path) in str(err.value)


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.tsv").write_text("\n")
    with pytest.raises(InputError, match="no pairs found"):
        read_pairs(tmp_path / "empty.tsv")
    with pytest.raises(InputError, match="not found"):
        read_pairs(tmp_path / "missing.tsv")
    with pytest.raises(InputError, match="no pairs"):
        make_pairs(ConceptTable())
