"""CoNLL-style NER files → spaCy `DocBin` (`.spacy`) for `spacy train`.

Reads one token per line with the tag in the last column and a blank line between sentences:
CoNLL-2003 (`token POS chunk NER`, space separated, `-DOCSTART-` lines start documents), and
tab-separated files such as the NCBI-disease/BC5CDR `conll/*.tsv` (2 or 6 columns). Tags may be
IOB1, IOB2/BIO, BILUO or IOBES; spaCy's `iob_to_biluo`/`biluo_tags_to_spans` make the spans.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Tuple

from spacy.tokens import Doc, DocBin
from spacy.training import biluo_tags_to_spans, iob_to_biluo
from spacy.vocab import Vocab

from spacy_el.io import InputError, atomic_write, read_lines

FORMATS = ("conll", "tsv")
_TAG = re.compile(r"^(O|[BIELSU]-\S.*)$")
#: BILUO/IOBES prefixes folded to IOB before spaCy's iob_to_biluo repairs and converts them.
_TO_IOB = {"B": "B", "U": "B", "S": "B", "I": "I", "L": "I", "E": "I"}

Sentence = List[Tuple[str, str]]


def read_conll(path: str | Path, fmt: str = "conll") -> Iterator[List[Sentence]]:
    """Yield documents (lists of sentences of (token, IOB tag)) from a CoNLL/TSV file.
    Files without `-DOCSTART-` lines are one document."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    doc: List[Sentence] = []
    sent: Sentence = []
    for lineno, line in read_lines(path):
        fields = line.split("\t") if fmt == "tsv" else line.split()
        if not line.strip():
            if sent:
                doc.append(sent)
                sent = []
            continue
        if fields[0] == "-DOCSTART-":
            if sent:
                doc.append(sent)
                sent = []
            if doc:
                yield doc
                doc = []
            continue
        if len(fields) < 2:
            sep = "a tab" if fmt == "tsv" else "whitespace"
            raise InputError(
                f"{path}, line {lineno}: expected a token and a tag separated by {sep}, got {line!r}"
                + ("; for space-separated files use --format conll" if fmt == "tsv" else "")
            )
        token, tag = fields[0].strip(), fields[-1].strip()
        if not token or not _TAG.match(tag):
            raise InputError(
                f"{path}, line {lineno}: bad tag {tag!r} in the last column (expected O or "
                "B-/I-/L-/U-/E-/S- followed by a type, e.g. B-PER)"
            )
        sent.append((token, tag if tag == "O" else f"{_TO_IOB[tag[0]]}{tag[1:]}"))
    if sent:
        doc.append(sent)
    if doc:
        yield doc


def conll_to_docs(path: str | Path, vocab: Vocab, fmt: str = "conll", n_sents: int = 1) -> List[Doc]:
    """spaCy docs of up to `n_sents` consecutive sentences (never crossing a document
    boundary), with sentence starts and entities set."""
    if n_sents < 1:
        raise InputError(f"n_sents must be >= 1, got {n_sents}")
    docs = []
    for document in read_conll(path, fmt):
        for i in range(0, len(document), n_sents):
            sents = document[i : i + n_sents]
            words = [tok for sent in sents for tok, _ in sent]
            tags = [tag for sent in sents for _, tag in sent]
            starts = [j == 0 for sent in sents for j in range(len(sent))]
            doc = Doc(vocab, words=words, sent_starts=starts)
            doc.ents = biluo_tags_to_spans(doc, iob_to_biluo(tags))
            docs.append(doc)
    return docs


def convert_ner(input_path: str | Path, output_path: str | Path, fmt: str = "conll", n_sents: int = 1) -> Tuple[int, int, int]:
    """Convert one file to a `.spacy` DocBin, written atomically. Returns (docs, tokens, entities)."""
    docs = conll_to_docs(input_path, Vocab(), fmt, n_sents)
    data = DocBin(docs=docs, store_user_data=False).to_bytes()
    with atomic_write(output_path, "wb") as f:
        f.write(data)
    return len(docs), sum(len(d) for d in docs), sum(len(d.ents) for d in docs)
