"""CoNLL/TSV → DocBin conversion and the NER CLI commands."""
from __future__ import annotations

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_el.cli import app
from spacy_el.io import InputError
from spacy_el.ner.convert import conll_to_docs, convert_ner

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""

TSV2 = "Hereditary\tB-Disease\nbreast\tI-Disease\ncancer\tI-Disease\n.\tO\n\nNo\tO\ndisease\tO\n"
TSV6 = "Naloxone\tnaloxone\tX\tNN\tB-NP\tB-Chemical\nreverses\treverse\tX\tVBZ\tB-VP\tO\n\nhypertension\thypertension\tX\tNN\tB-NP\tB-Disease\n"


def spans(doc):
    return [(e.text, e.label_) for e in doc.ents]


def test_conll_documents_and_n_sents(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    docs = conll_to_docs(path, Vocab(), "conll", n_sents=10)
    assert len(docs) == 2  # never crosses -DOCSTART-
    assert spans(docs[0]) == [("EU", "ORG"), ("German", "MISC"), ("Peter Blackburn", "PER")]
    assert [s.text for s in docs[0].sents] == ["EU rejects German call .", "Peter Blackburn"]
    assert spans(docs[1]) == [("BRUSSELS", "LOC")]
    assert len(conll_to_docs(path, Vocab(), "conll", n_sents=1)) == 3


@pytest.mark.parametrize("text, expected", [
    (TSV2, [[("Hereditary breast cancer", "Disease")], []]),
    (TSV6, [[("Naloxone", "Chemical")], [("hypertension", "Disease")]]),
])
def test_tsv_formats(tmp_path, text, expected):
    path = tmp_path / "x.tsv"
    path.write_text(text)
    assert [spans(d) for d in conll_to_docs(path, Vocab(), "tsv", n_sents=1)] == expected


def test_biluo_iob1_and_iobes_tags(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("A U-X\nb B-Y\nc L-Y\nd I-Z\ne S-W\nf B-V\ng E-V\n")
    assert spans(conll_to_docs(path, Vocab(), "conll")[0]) == [("A", "X"), ("b c", "Y"), ("d", "Z"), ("e", "W"), ("f g", "V")]


@pytest.mark.parametrize("text, fmt, where", [
    ("EU B-ORG\nrejects\n", "conll", "line 2"),
    ("EU B-ORG\nrejects Q-ORG\n", "conll", "line 2"),
    ("EU B-ORG\nrejects X\n", "conll", "line 2"),
    ("EU\tO\nrejects O\n", "tsv", "line 2"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, fmt, where):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=f"bad.txt, {where}"):
        convert_ner(path, tmp_path / "out.spacy", fmt)
    assert not (tmp_path / "out.spacy").exists()  # nothing half-written


def test_convert_writes_docbin_and_cli(tmp_path):
    src = tmp_path / "train.txt"
    src.write_text(CONLL)
    out = tmp_path / "train.spacy"
    result = CliRunner().invoke(app, ["convert-ner", str(src), str(out), "--n-sents", "1"])
    assert result.exit_code == 0, result.output
    assert "3 docs" in result.output
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [len(d.ents) for d in docs] == [2, 1, 1]
    bad = tmp_path / "bad.tsv"
    bad.write_text("x\tB-\n")
    result = CliRunner().invoke(app, ["convert-ner", str(bad), str(out), "--format", "tsv"])
    assert result.exit_code == 1 and "bad.tsv, line 1" in result.output
    assert "Traceback" not in result.output


def test_conll2003_dev_converts(shared_data, tmp_path):
    n_docs, n_tokens, n_ents = convert_ner(shared_data / "conll2003" / "dev.txt", tmp_path / "dev.spacy", "conll", 10)
    assert n_tokens == 51362 and n_ents == 5942


PUBTATOR = (
    "1|t|Familial adenomatous polyposis (FAP) in a family.\n"
    "1|a|FAP patients develop colorectal cancer. Mutations of the APC-gene were found.\n"
    "1\t0\t30\tFamilial adenomatous polyposis\tSpecificDisease\tD011125\n"
    "1\t32\t35\tFAP\tSpecificDisease\tD011125\n"
    "1\t50\t53\tFAP\tSpecificDisease\tD011125\n"
    "1\t71\t88\tcolorectal cancer\tSpecificDisease\tD015179\n"
    "1\t71\t81\tcolorectal\tModifier\tD015179\n"  # overlaps the mention before: left out
    "1\t107\t109\tAP\tModifier\tD011125\n"  # inside the token "APC": cannot be a span
    "\n"
)


def test_pubtator_abstracts_become_docs_with_spacy_tokens(tmp_path):
    from spacy_el.ner.convert import pubtator_to_docs

    path = tmp_path / "corpus.txt"
    path.write_text(PUBTATOR)
    nlp = spacy.blank("en")
    (doc,) = pubtator_to_docs(path, nlp, label="Disease")
    assert doc.text.startswith("Familial adenomatous polyposis (FAP) in a family. FAP patients")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Familial adenomatous polyposis", "Disease"), ("FAP", "Disease"), ("FAP", "Disease"),
        ("colorectal cancer", "Disease")]
    apc = next(t for t in doc if t.text.startswith("APC"))
    assert apc.ent_iob_ == ""  # missing: neither entity nor outside
    assert doc[-1].ent_iob_ == "O"
    typed = pubtator_to_docs(path, nlp)[0]
    assert {e.label_ for e in typed.ents} == {"SpecificDisease"}
    sentences = pubtator_to_docs(path, nlp, label="Disease", context="sentence")
    assert len(sentences) == 3 and sum(len(d.ents) for d in sentences) == 4
    assert sentences[0].text.startswith("Familial") and sentences[1].text.startswith("FAP patients")
    with pytest.raises(InputError, match="context"):
        pubtator_to_docs(path, nlp, context="paragraph")


def test_convert_cli_reads_pubtator(tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = tmp_path / "corpus.txt"
    path.write_text(PUBTATOR)
    out = tmp_path / "out.spacy"
    result = CliRunner().invoke(app, ["convert-ner", str(path), str(out), "--format", "pubtator", "--label", "Disease"])
    assert result.exit_code == 0, result.output
    assert "Wrote 1 docs" in result.output and "4 entities" in result.output
    (doc,) = DocBin().from_disk(out).get_docs(spacy.blank("en").vocab)
    assert [e.label_ for e in doc.ents] == ["Disease"] * 4


def test_unannotated_labels_travel_with_the_docs(tmp_path):
    from spacy_el.ner.convert import UNANNOTATED_KEY

    path = tmp_path / "corpus.txt"
    path.write_text(PUBTATOR)
    out = tmp_path / "out.spacy"
    result = CliRunner().invoke(app, ["convert-ner", str(path), str(out), "--format", "pubtator", "--label", "Disease",
                                      "--unannotated-label", "Chemical"])
    assert result.exit_code == 0, result.output
    (doc,) = DocBin().from_disk(out).get_docs(spacy.blank("en").vocab)
    assert list(doc.user_data[UNANNOTATED_KEY]) == ["Chemical"] and len(doc.ents) == 4
    plain = tmp_path / "plain.spacy"
    convert_ner(path, plain, "pubtator", label="Disease")
    (doc,) = DocBin().from_disk(plain).get_docs(spacy.blank("en").vocab)
    assert UNANNOTATED_KEY not in doc.user_data
    with pytest.raises(InputError, match="the label this corpus annotates"):
        convert_ner(path, tmp_path / "x.spacy", "pubtator", label="Disease", unannotated=["Disease"])


def test_an_empty_token_is_named_as_such(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("EU\tB-ORG\n\tO\n")
    with pytest.raises(InputError, match=r"empty.tsv, line 2: empty token in the first column \(tag 'O'\)"):
        convert_ner(path, tmp_path / "out.spacy", "tsv")


def test_an_output_that_is_a_directory_is_refused_in_one_line(tmp_path):
    src = tmp_path / "train.txt"
    src.write_text(CONLL)
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["convert-ner", str(src), str(tmp_path / "out")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, not an exception
    assert f"{tmp_path / 'out'}: is a directory; give the path of a file to write" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "train.txt"]  # no temporary file left
