"""NER corpora → spaCy `DocBin` (`.spacy`) for `spacy train`.

PubTator files (NCBI-disease, BC5CDR) are read as running text: title + " " + abstract, split by
the pipeline's own tokenizer, one doc per abstract (document context) or per sentence, so the
tagger trains on the tokens it will see at inference.

CoNLL-style files: one token per line with the tag in the last column and a blank line between sentences:
CoNLL-2003 (`token POS chunk NER`, space separated, `-DOCSTART-` lines start documents), and
tab-separated files such as the NCBI-disease/BC5CDR `conll/*.tsv` (2 or 6 columns). Tags may be
IOB1, IOB2/BIO, BILUO or IOBES; spaCy's `iob_to_biluo`/`biluo_tags_to_spans` make the spans.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import biluo_tags_to_spans, iob_to_biluo
from spacy.vocab import Vocab

from spacy_el.io import InputError, atomic_write, read_lines

FORMATS = ("conll", "tsv", "pubtator")
CONTEXTS = ("doc", "sentence")
_TAG = re.compile(r"^(O|[BIELSU]-\S.*)$")
#: BILUO/IOBES prefixes folded to IOB before spaCy's iob_to_biluo repairs and converts them.
_TO_IOB = {"B": "B", "U": "B", "S": "B", "I": "I", "L": "I", "E": "I"}

Sentence = List[Tuple[str, str]]

#: `doc.user_data` key: the entity labels a training doc does not annotate (`convert_ner(unannotated=…)`).
UNANNOTATED_KEY = "spacy_el.unannotated_labels"


def pubtator_to_docs(path: str | Path, nlp: Language, *, types: Optional[Sequence[str]] = None,
                     label: Optional[str] = None, context: str = "doc") -> List[Doc]:
    """One doc per abstract (`context="doc"`) or per sentence (`"sentence"`, split by spaCy's
    `sentencizer`, never inside a mention), tokenized by `nlp`, with the mentions of `types`
    (all when None) as entities labelled `label` (default: the mention type). A mention whose
    offsets fall inside a token, and tokens of overlapping mentions after the first, are marked
    missing, so training neither learns nor penalises them."""
    from spacy_el.corpora.pubtator import read_pubtator

    if context not in CONTEXTS:
        raise InputError(f"unknown context {context!r}; use one of {', '.join(CONTEXTS)}")
    corpus = read_pubtator(path, types=types)
    sentencizer = nlp.get_pipe("sentencizer") if "sentencizer" in nlp.pipe_names else None
    if context == "sentence" and sentencizer is None:
        from spacy.pipeline import Sentencizer

        sentencizer = Sentencizer()
    docs = []
    for pdoc in corpus.docs:
        doc = nlp.make_doc(pdoc.text)
        ents: List[Span] = []
        missing: List[Span] = []
        taken = set()
        for m in sorted(pdoc.mentions, key=lambda m: (m.start, -m.end)):
            span = doc.char_span(m.start, m.end, label=label or m.type)
            if span is None:
                missing.append(doc.char_span(m.start, m.end, alignment_mode="expand"))
                continue
            if taken & set(range(span.start, span.end)):
                missing.append(span)
                continue
            taken |= set(range(span.start, span.end))
            ents.append(span)
        unknown = {i for s in missing if s is not None for i in range(s.start, s.end)} - taken
        doc.set_ents(ents, missing=[doc[i : i + 1] for i in sorted(unknown)], default="outside")
        if context == "doc":
            docs.append(doc)
            continue
        sentencizer(doc)
        for span in ents + [s for s in missing if s is not None]:  # never split inside a mention
            for token in span[1:]:
                token.is_sent_start = False
        docs.extend(sent.as_doc() for sent in doc.sents)
    return docs


def read_conll(path: str | Path, fmt: str = "conll") -> Iterator[List[Sentence]]:
    """Yield documents (lists of sentences of (token, IOB tag)) from a CoNLL/TSV file.
    Files without `-DOCSTART-` lines are one document."""
    if fmt not in ("conll", "tsv"):
        raise InputError(f"unknown format {fmt!r}; use conll or tsv")
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
        if not token:
            raise InputError(f"{path}, line {lineno}: empty token in the first column (tag {tag!r}); every line "
                             "needs a token, a blank line ends a sentence")
        if not _TAG.match(tag):
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


def convert_ner(input_path: str | Path, output_path: str | Path, fmt: str = "conll", n_sents: int = 1, *,
                types: Optional[Sequence[str]] = None, label: Optional[str] = None, context: str = "doc",
                lang: str = "en", tokenizer: str = "default",
                unannotated: Sequence[str] = ()) -> Tuple[int, int, int]:
    """Convert one file to a `.spacy` DocBin, written atomically. Returns (docs, tokens, entities).
    CoNLL/TSV: `n_sents` sentences per doc. PubTator: `types`, `label` and `context` as in
    `pubtator_to_docs`, tokenized by a blank `lang` pipeline with spaCy's tokenizer (`default`) or
    `spacy_el.BiomedicalTokenizer.v1` (`biomedical`: train with the same one).

    `unannotated`: entity labels this corpus does not annotate (e.g. Chemical in NCBI-disease,
    trained beside BC5CDR): stored in each doc's `user_data` under `UNANNOTATED_KEY`, so that
    `bilstm_ner` reads the doc's O tokens as "O or one of these" instead of "not an entity"."""
    unannotated = list(dict.fromkeys(unannotated))
    if label is not None and label in unannotated:
        raise InputError(f"--unannotated-label {label!r} is the label this corpus annotates (--label)")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    from spacy_el.ner.tokenizer import TOKENIZERS, blank

    if tokenizer not in TOKENIZERS:
        raise InputError(f"unknown tokenizer {tokenizer!r}; use --tokenizer {' or --tokenizer '.join(TOKENIZERS)}")
    if fmt == "pubtator":
        docs = pubtator_to_docs(input_path, blank(lang, tokenizer), types=types, label=label, context=context)
    else:
        docs = conll_to_docs(input_path, Vocab(), fmt, n_sents)
    for doc in docs if unannotated else ():
        doc.user_data[UNANNOTATED_KEY] = unannotated
    data = DocBin(docs=docs, store_user_data=bool(unannotated)).to_bytes()
    with atomic_write(output_path, "wb") as f:
        f.write(data)
    return len(docs), sum(len(d) for d in docs), sum(len(d.ents) for d in docs)
