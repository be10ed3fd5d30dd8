from __future__ import annotations

from pathlib import Path

import pytest

from spacy_el.corpora.pubtator import (linking_queries, mention_aliases, mention_concept_counts, read_pubtator,
                                       split_folds)
from spacy_el.io import InputError

TITLE = "Breast and ovarian cancer in BRCA1 carriers."
ABSTRACT = "Hereditary breast and ovarian cancer and DM1 were studied; no lithium toxicity."
TEXT = f"{TITLE} {ABSTRACT}"


def span(s: str, nth: int = 0) -> tuple[int, int]:
    start = -1
    for _ in range(nth + 1):
        start = TEXT.index(s, start + 1)
    return start, start + len(s)


def mention(pmid: str, s: str, typ: str, ids: str, parts: str | None = None, nth: int = 0) -> str:
    a, b = span(s, nth)
    cols = [pmid, str(a), str(b), s, typ, ids] + ([parts] if parts is not None else [])
    return "\t".join(cols)


def write(tmp_path: Path, lines: list[str], name: str = "c.PubTator") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def doc_lines(pmid: str = "1") -> list[str]:
    return [
        f"{pmid}|t|{TITLE}",
        f"{pmid}|a|{ABSTRACT}",
        mention(pmid, "Breast and ovarian cancer", "Disease", "D001943|D010051",
                "Breast cancer|ovarian cancer"),
        mention(pmid, "breast and ovarian cancer", "Disease", "D001943|D010051"),  # no part texts
        mention(pmid, "DM1", "Disease", " D009223+OMIM:160900"),  # joint ids, stray space
        mention(pmid, "lithium", "Chemical", "D008094"),
        mention(pmid, "toxicity", "Disease", "-1"),
        f"{pmid}\tCID\tD008094\tD064420",
    ]


def test_reader_edge_cases(tmp_path):
    corpus = read_pubtator(write(tmp_path, doc_lines() + [""] + doc_lines("2")))
    assert len(corpus.docs) == 2
    assert corpus.n_mentions == 10 and corpus.n_nil == 2 and corpus.n_relations == 2
    comp, comp_noparts, joint, chem = corpus.docs[0].mentions
    assert comp.ids == ["MESH:D001943", "MESH:D010051"]
    assert comp.parts == ["Breast cancer", "ovarian cancer"]
    assert comp_noparts.parts == []
    assert joint.ids == ["MESH:D009223", "OMIM:160900"] and joint.raw_ids == "D009223+OMIM:160900"
    assert chem.type == "Chemical"
    doc = corpus.docs[0]
    assert all(doc.text[m.start:m.end] == m.text for m in doc.mentions)


def test_type_filter(tmp_path):
    corpus = read_pubtator(write(tmp_path, doc_lines()), types=["Disease"])
    assert corpus.n_mentions == 4 and corpus.n_nil == 1
    assert {m.type for m in corpus.mentions} == {"Disease"}


def test_linking_queries_protocol(tmp_path):
    corpus = read_pubtator(write(tmp_path, doc_lines()), types=["Disease"])
    queries = linking_queries(corpus)
    assert [(q.text, q.gold, q.is_part) for q in queries] == [
        ("Breast cancer", ["MESH:D001943"], True),
        ("ovarian cancer", ["MESH:D010051"], True),
        ("breast and ovarian cancer", ["MESH:D001943", "MESH:D010051"], False),
        ("DM1", ["MESH:D009223", "OMIM:160900"], False),
    ]
    assert len(linking_queries(corpus, split_composite=False)) == 3


def test_nil_part_of_composite_is_dropped(tmp_path):
    lines = doc_lines()[:2] + [mention("1", "Breast and ovarian cancer", "Disease", "D001943|-1",
                                        "Breast cancer|ovarian cancer")]
    corpus = read_pubtator(write(tmp_path, lines))
    assert corpus.n_nil == 0
    assert [(q.text, q.gold) for q in linking_queries(corpus)] == [("Breast cancer", ["MESH:D001943"])]


def test_mention_aliases(tmp_path):
    lines = doc_lines() + [mention("1", "DM1", "Disease", "D009223+OMIM:160900", nth=0)]
    aliases = mention_aliases(read_pubtator(write(tmp_path, lines), types=["Disease"]))
    assert aliases == [
        ("MESH:D001943", "breast cancer"),
        ("MESH:D010051", "ovarian cancer"),
        ("MESH:D009223|OMIM:160900", "dm1"),
    ]


def test_mention_concept_counts(tmp_path):
    """Every mention counts (not only distinct texts); composites through their lined-up parts."""
    lines = doc_lines() + [mention("1", "DM1", "Disease", "D009223+OMIM:160900", nth=0)]
    counts = mention_concept_counts(read_pubtator(write(tmp_path, lines), types=["Disease"]))
    assert counts == {"MESH:D001943": 1, "MESH:D010051": 1, "MESH:D009223|OMIM:160900": 2}


@pytest.mark.parametrize(
    "bad,lineno,needle",
    [
        ("1\t0\t6", 3, "3 tab-separated columns"),
        ("1\tx\t6\tBreast\tDisease\tD001943", 3, "integers"),
        ("1\t0\t6\tOvaria\tDisease\tD001943", 3, "does not match"),
        ("1\t0\t999\tBreast\tDisease\tD001943", 3, "outside the document"),
        ("9\t0\t6\tBreast\tDisease\tD001943", 3, "PMID 9"),
        ("1\t0\t6\tBreast\tDisease\t ", 3, "empty concept id"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad, lineno, needle):
    path = write(tmp_path, doc_lines()[:2] + [bad])
    with pytest.raises(InputError) as err:
        read_pubtator(path)
    assert f"{path}, line {lineno}" in str(err.value) and needle in str(err.value)


def test_abstract_without_title(tmp_path):
    with pytest.raises(InputError, match="line 1"):
        read_pubtator(write(tmp_path, [f"1|a|{ABSTRACT}"]))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_pubtator(tmp_path / "nope.txt")


def test_real_ncbi_dev(shared_data):
    corpus = read_pubtator(shared_data / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    # Counts from shared/data/SOURCES.md.
    assert len(corpus.docs) == 100
    assert corpus.n_mentions == 787 and corpus.n_nil == 0
    assert sum(m.type == "CompositeMention" for m in corpus.mentions) == 35
    assert sum("|" in m.raw_ids for m in corpus.mentions) == 20
    assert sum("+" in m.raw_ids for m in corpus.mentions) == 10
    first = corpus.docs[0].mentions[0]
    assert first.text == "enzyme deficiency" and first.ids == ["MESH:D008661"]  # field was " D008661"
    # NCBI has no part texts: every mention is one query.
    assert len(linking_queries(corpus)) == 787


def test_real_ncbi_train_duplicate_pmid(shared_data):
    corpus = read_pubtator(shared_data / "ncbi_disease" / "NCBItrainset_corpus.txt")
    assert len(corpus.docs) == 593 and corpus.n_mentions == 5145
    assert [d.pmid for d in corpus.docs].count("8528200") == 2


def test_folds_hold_each_document_out_once_with_its_lines(tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = write(tmp_path, [line for pmid in "12345" for line in (*doc_lines(pmid), "")])
    whole = read_pubtator(path)
    folds = split_folds(path, 3, seed=0)
    assert len(folds) == 3 and folds == split_folds(path, 3, seed=0) != split_folds(path, 3, seed=1)
    held_out = []
    for i, (held, rest) in enumerate(folds):
        held_c = read_pubtator(write(tmp_path, held, f"h{i}")), read_pubtator(write(tmp_path, rest, f"r{i}"))
        pmids = [[d.pmid for d in c.docs] for c in held_c]
        assert not set(pmids[0]) & set(pmids[1]) and sorted(pmids[0] + pmids[1]) == list("12345")
        assert sum(c.n_mentions for c in held_c) == whole.n_mentions  # every line kept, relations too
        assert sum(c.n_relations for c in held_c) == whole.n_relations
        held_out += pmids[0]
    assert sorted(held_out) == list("12345")
    with pytest.raises(InputError, match="folds=6; use 2 to 5"):
        split_folds(path, 6)
    res = CliRunner().invoke(app, ["split-folds", str(path), str(tmp_path / "folds"), "--folds", "2"])
    assert res.exit_code == 0, res.output
    assert [len(read_pubtator(tmp_path / "folds" / f"fold{i}" / "heldout.txt").docs) for i in (0, 1)] == [3, 2]
    res = CliRunner().invoke(app, ["split-folds", str(tmp_path / "missing.txt"), str(tmp_path / "f2")])
    assert res.exit_code == 1 and "missing.txt: file not found" in res.output
