from __future__ import annotations

from pathlib import Path

import pytest

from spacy_el.io import InputError
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.pairs import read_pairs
from spacy_el.umls import SemanticTypes, UmlsFilter, load_semgroups, preprocess_umls, resolve_tuis

FIXTURES = Path(__file__).parent / "fixtures" / "umls"


def row(cui="C0000001", lat="ENG", ts="P", stt="PF", ispref="Y", sab="MSH", name="Name",
        suppress="N", aui="A1") -> str:
    """One MRCONSO row in the real 18-column layout with its trailing `|`."""
    cols = [cui, lat, ts, "L1", stt, "S1", ispref, aui, "", "", "D1", sab, "PT", "D1", name, "0",
            suppress, "256"]
    return "|".join(cols) + "|"


def write_rrf(path: Path, rows: list[str], final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + ("\n" if final_newline else ""), encoding="utf-8")
    return path


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text("utf-8").splitlines()]


def test_scispacy_sample_meta_dir(tmp_path):
    """Real rows, no final newline; MRSTY in the META dir is picked up."""
    stats = preprocess_umls(FIXTURES / "scispacy", tmp_path / "out", progress=False)
    assert stats.rows == 3 and stats.concepts == 2 and stats.names == 3
    table = ConceptTable.from_tsv(tmp_path / "out" / "concepts.tsv")
    assert table.ids == ["C0000005", "C0000005", "C0000039"]
    assert table.names[0] == "(131)I-Macroaggregated Albumin"  # TS=P, ISPREF=Y: canonical first
    assert read_tsv(tmp_path / "out" / "semtypes.tsv")[1] == [
        "C0000039", "T109|T121", "Organic Chemical|Pharmacologic Substance"]
    pairs = read_pairs(tmp_path / "out" / "pairs.tsv")
    assert ("C0000005", "(131)I-Macroaggregated Albumin", "(131)I-MAA") in pairs


def test_medkit_sample_language_and_dedupe(tmp_path):
    src = FIXTURES / "medkit_2021AB" / "MRCONSO.RRF"  # a file argument: no MRSTY picked up
    stats = preprocess_umls(src, tmp_path / "eng", progress=False)
    table = ConceptTable.from_tsv(tmp_path / "eng" / "concepts.tsv")
    assert not (tmp_path / "eng" / "semtypes.tsv").exists()
    assert "Diabète" not in table.names and "C0038454" not in table.ids  # French only
    # "Diabetes mellitus" (ICD10) is a case variant of "Diabetes Mellitus": deduped.
    assert [n for c, n, _ in table.rows() if c == "C0011849"] == ["Diabetes Mellitus", "diabetes"]
    # canonical: TS=P and ISPREF=Y beats the TS=P, ISPREF=N row that comes first
    assert [n for c, n, _ in table.rows() if c == "C0011860"][0] == "Diabetes mellitus non-insulin-dependent"
    assert stats.rows == 15 and stats.rows_kept == 10
    preprocess_umls(src, tmp_path / "all", filt=UmlsFilter(languages=None), progress=False)
    assert "Diabète" in ConceptTable.from_tsv(tmp_path / "all" / "concepts.tsv").names


def test_semantic_group_filter(tmp_path):
    meta = FIXTURES / "scispacy"
    stats = preprocess_umls(meta, tmp_path / "chem", filt=UmlsFilter(tuis=resolve_tuis(tuis=["T121"])),
                            progress=False)
    assert stats.concepts == 1 and stats.concepts_dropped_by_semtype == 1
    assert set(ConceptTable.from_tsv(tmp_path / "chem" / "concepts.tsv").ids) == {"C0000039"}
    stats = preprocess_umls(meta, tmp_path / "diso", filt=UmlsFilter(tuis=resolve_tuis(groups=["DISO"])),
                            progress=False)
    assert stats.concepts == 0
    with pytest.raises(InputError, match="needs MRSTY"):
        preprocess_umls(meta / "MRCONSO.RRF", tmp_path / "x", filt=UmlsFilter(tuis=frozenset({"T047"})),
                        progress=False)


def test_semgroups_bundled():
    groups = load_semgroups()
    assert "T047" in groups["DISO"] and "T121" in groups["CHEM"]
    with pytest.raises(InputError, match="unknown semantic group"):
        resolve_tuis(groups=["NOPE"])


def test_filters_suppressible_sab_and_canonical(tmp_path):
    rows = [
        row("C0000002", name="first name", ts="S", ispref="N"),
        row("C0000002", name="Preferred Name", ts="P", ispref="Y"),
        row("C0000002", name="preferred   name", ts="S", sab="NCI"),  # normalised duplicate
        row("C0000002", name="obsolete name", suppress="O"),
        row("C0000002", name="editor suppressed", suppress="E"),
        row("C0000002", name="nom", lat="FRE"),
        row("C0000002", name="from snomed", sab="SNOMEDCT_US"),
    ]
    src = write_rrf(tmp_path / "MRCONSO.RRF", rows, final_newline=False)
    preprocess_umls(src, tmp_path / "a", progress=False)
    names = ConceptTable.from_tsv(tmp_path / "a" / "concepts.tsv").names
    assert names == ["Preferred Name", "first name", "from snomed"]
    preprocess_umls(src, tmp_path / "b", filt=UmlsFilter(include_suppressible=True,
                                                         exclude_sabs=frozenset({"SNOMEDCT_US"})),
                    progress=False)
    names = ConceptTable.from_tsv(tmp_path / "b" / "concepts.tsv").names
    assert names == ["Preferred Name", "first name", "obsolete name", "editor suppressed"]
    preprocess_umls(src, tmp_path / "c", filt=UmlsFilter(sabs=frozenset({"NCI"})), progress=False)
    assert ConceptTable.from_tsv(tmp_path / "c" / "concepts.tsv").names == ["preferred name"]


def test_pairs_capped_and_seeded(tmp_path):
    rows = [row("C0000003", name=f"synonym {i}", aui=f"A{i}") for i in range(20)]  # 190 possible pairs
    src = write_rrf(tmp_path / "MRCONSO.RRF", rows)
    s1 = preprocess_umls(src, tmp_path / "a", max_pairs=50, seed=1, progress=False)
    preprocess_umls(src, tmp_path / "b", max_pairs=50, seed=1, progress=False)
    preprocess_umls(src, tmp_path / "c", max_pairs=50, seed=2, progress=False)
    a, b, c = (read_pairs(tmp_path / d / "pairs.tsv") for d in "abc")
    assert s1.pairs == len(a) == 50 and len(set(a)) == 50
    assert a == b and a != c


def test_unsorted_file_is_sorted_externally(tmp_path):
    rows = [row("C0000009", name="z1"), row("C0000001", name="a1"), row("C0000009", name="z2"),
            row("C0000005", name="m1"), row("C0000001", name="a2")]
    src = write_rrf(tmp_path / "MRCONSO.RRF", rows)
    stats = preprocess_umls(src, tmp_path / "out", progress=False, sort_chunk_rows=2)
    assert stats.externally_sorted
    table = ConceptTable.from_tsv(tmp_path / "out" / "concepts.tsv")
    assert list(table.rows()) == [("C0000001", "a1", "kb"), ("C0000001", "a2", "kb"),
                                  ("C0000005", "m1", "kb"), ("C0000009", "z1", "kb"),
                                  ("C0000009", "z2", "kb")]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # temp files gone


@pytest.mark.parametrize(
    "bad,needle",
    [
        (b"C0000004|ENG|P|too few|\n", b"expected 18"),
        (("|".join(["C0000004"] + ["x"] * 17) + "\n").encode(), b"expected 18"),  # no trailing |
        (row(name="caf\u00e9").encode("latin-1") + b"\n", b"not valid UTF-8"),
    ],
)
def test_bad_rows_error_or_skip(tmp_path, bad, needle):
    src = tmp_path / "MRCONSO.RRF"
    src.write_bytes((row(name="good") + "\n").encode() + bad + (row("C0000008", name="after") + "\n").encode())
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        preprocess_umls(src, out, progress=False)
    assert f"{src}, line 2" in str(err.value) and needle.decode() in str(err.value)
    assert not out.joinpath("concepts.tsv").exists() and not out.joinpath("pairs.tsv").exists()
    stats = preprocess_umls(src, out, skip_bad_rows=True, progress=False)
    assert stats.bad_rows == 1 and stats.concepts == 2


def test_previous_output_kept_when_run_fails(tmp_path):
    good = write_rrf(tmp_path / "good" / "MRCONSO.RRF", [row(name="good")])
    preprocess_umls(good, tmp_path / "out", progress=False)
    before = (tmp_path / "out" / "concepts.tsv").read_text()
    bad = write_rrf(tmp_path / "bad" / "MRCONSO.RRF", [row(name="x"), "C1|broken|"])
    with pytest.raises(InputError):
        preprocess_umls(bad, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "concepts.tsv").read_text() == before


def test_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        preprocess_umls(tmp_path / "nope", tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="has no MRCONSO.RRF"):
        preprocess_umls(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="MRSTY file not found"):
        SemanticTypes(tmp_path / "MRSTY.RRF")


def test_cli_umls(tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    result = CliRunner().invoke(app, ["umls", str(FIXTURES / "medkit_2021AB"), str(tmp_path / "out"),
                                      "--lang", "ENG", "--lang", "FRE", "--group", "DISO"])
    assert result.exit_code == 0, result.output
    assert "5 concepts" in result.output
    result = CliRunner().invoke(app, ["umls", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 1 and "has no MRCONSO.RRF" in result.output
