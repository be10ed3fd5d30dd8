"""PubTator reader: the annotated corpora (NCBI-disease, BC5CDR) that linking is evaluated on
and whose training mentions can become KB aliases.

Layout of one document (a blank line separates documents)::

    PMID|t|title
    PMID|a|abstract
    PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>ids[<TAB>part texts]   (mention)
    PMID<TAB>CID<TAB>chemical<TAB>disease                              (relation, skipped)

Offsets refer to `title + " " + abstract`. The id field may hold composite parts joined by
`|` (BC5CDR then lists the part texts in a 7th column, also `|`-joined), ids that jointly
name one concept joined by `+`, or `-1` for "no concept" (NIL).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Iterable

from spacy_el.ids import normalize_name, split_ids
from spacy_el.io import InputError, atomic_write, read_lines

NIL = "-1"


@dataclass
class Mention:
    pmid: str
    start: int
    end: int
    text: str
    type: str
    #: Canonical ids of every part (NIL parts left out), e.g. `["MESH:D003110", "MESH:D009369"]`.
    ids: list[str]
    #: The id field as written (stripped), kept so composite parts can be aligned with `parts`.
    raw_ids: str
    #: BC5CDR's 7th column: the texts of a composite mention's parts (empty when absent).
    parts: list[str] = field(default_factory=list)

    @property
    def is_composite(self) -> bool:
        return "|" in self.raw_ids


@dataclass
class PubTatorDoc:
    pmid: str
    title: str
    abstract: str
    mentions: list[Mention] = field(default_factory=list)
    #: the line of its title in the file it was read from (0: unknown)
    line: int = 0

    @property
    def text(self) -> str:
        """The text the mention offsets refer to."""
        return f"{self.title} {self.abstract}"


@dataclass
class PubTatorCorpus:
    docs: list[PubTatorDoc]
    #: Mention lines of the selected types whose id field is NIL only (`-1`): not in `mentions`.
    n_nil: int
    #: Mention lines of the selected types, NIL ones included.
    n_mentions: int
    #: Relation lines (4 columns) read and skipped.
    n_relations: int = 0
    #: Where the corpus came from, for provenance (e.g. the alias source in a concept table).
    path: str = ""

    @property
    def mentions(self) -> list[Mention]:
        return [m for doc in self.docs for m in doc.mentions]


@dataclass
class LinkingQuery:
    """One mention to link: `gold` lists the acceptable concept ids (any match counts)."""

    text: str
    gold: list[str]
    pmid: str
    start: int
    end: int
    type: str
    #: True when the query is one part of a split composite mention.
    is_part: bool = False


def read_pubtator(path: str | Path, types: Iterable[str] | None = None) -> PubTatorCorpus:
    """Read a PubTator file; keep mentions whose type is in `types` (all when None).

    NIL mentions (`-1`) are counted in `n_nil` and left out. Every malformed line raises an
    `InputError` naming the file and line. Mention offsets are checked against the text.
    """
    return parse_pubtator(read_lines(path), path, types)


def parse_pubtator(lines: Iterable[tuple[int, str]], path: str | Path,
                   types: Iterable[str] | None = None) -> PubTatorCorpus:
    """`read_pubtator` over numbered lines (e.g. one piece of a large file, see
    `spacy_el.corpora.documents.read_split`); errors name `path` and the line number given."""
    keep = set(types) if types is not None else None
    docs: list[PubTatorDoc] = []
    doc: PubTatorDoc | None = None
    n_nil = n_mentions = n_relations = 0

    def fail(lineno: int, msg: str) -> InputError:
        return InputError(f"{path}, line {lineno}: {msg}")

    for lineno, line in lines:
        if not line.strip():
            doc = None
            continue
        head = re.match(r"^([^\t|]+)\|([ta])\|(.*)$", line)
        if head:
            pmid, kind, body = head.groups()
            if kind == "t":
                doc = PubTatorDoc(pmid=pmid, title=body, abstract="", line=lineno)
                docs.append(doc)
            elif doc is None or doc.pmid != pmid:
                raise fail(lineno, f"abstract line for PMID {pmid} without its title line before it")
            else:
                doc.abstract = body
            continue
        cols = line.split("\t")
        if len(cols) == 4:  # relation line (e.g. BC5CDR `PMID CID chem disease`): not needed
            n_relations += 1
            continue
        if len(cols) not in (6, 7):
            raise fail(
                lineno,
                f"expected a `PMID|t|`/`PMID|a|` line, a 6- or 7-column mention line or a "
                f"4-column relation line, found {len(cols)} tab-separated columns",
            )
        pmid, start_s, end_s, text, mtype, raw = cols[:6]
        if doc is None or doc.pmid != pmid:
            raise fail(lineno, f"mention for PMID {pmid} outside that document (missing title line?)")
        try:
            start, end = int(start_s), int(end_s)
        except ValueError:
            raise fail(lineno, f"offsets must be integers, found {start_s!r} and {end_s!r}") from None
        if not 0 <= start < end <= len(doc.text):
            raise fail(lineno, f"offsets {start}-{end} outside the document text ({len(doc.text)} chars)")
        # NCBI train has mention texts with stray trailing spaces: compare modulo whitespace and
        # keep the document's own span text.
        if doc.text[start:end].split() != text.split():
            raise fail(lineno, f"mention {text!r} does not match the text at {start}-{end}: "
                               f"{doc.text[start:end]!r}")
        text = doc.text[start:end]
        if keep is not None and mtype not in keep:
            continue
        n_mentions += 1
        raw = raw.strip()
        if not raw:
            raise fail(lineno, "empty concept id field (use -1 for mentions without a concept)")
        ids = [i for i in split_ids(raw) if i != NIL]
        if not ids:
            n_nil += 1
            continue
        parts = [p.strip() for p in cols[6].split("|")] if len(cols) == 7 and cols[6].strip() else []
        doc.mentions.append(Mention(pmid, start, end, text, mtype, ids, raw, parts))
    return PubTatorCorpus(docs, n_nil=n_nil, n_mentions=n_mentions, n_relations=n_relations,
                          path=str(path))


def _composite_parts(m: Mention) -> list[tuple[str, list[str]]] | None:
    """(part text, part ids) pairs when the part texts line up with the `|` ids, else None."""
    id_parts = m.raw_ids.split("|")
    if not m.parts or len(m.parts) != len(id_parts):
        return None
    return [(text, [i for i in split_ids(ids) if i != NIL]) for text, ids in zip(m.parts, id_parts)]


def linking_queries(corpus: PubTatorCorpus, split_composite: bool = True) -> list[LinkingQuery]:
    """The mentions to link, under SapBERT's (and BioSyn's) evaluation protocol.

    - A composite mention (`|` ids) whose part texts (BC5CDR's 7th column) are as many as its
      ids becomes one query per part, with that part's ids as gold (NIL parts are dropped).
    - Any other mention is one query whose gold is all its ids; a prediction sharing any of them
      is correct (`spacy_el.ids.ids_match`), since composite annotations do not fix an order
      and `+` ids jointly name one concept.
    - NIL mentions were already left out by the reader (counted in `corpus.n_nil`).
    With `split_composite=False` every mention is one query (span-level linking in a pipeline).
    """
    out: list[LinkingQuery] = []
    for m in corpus.mentions:
        parts = _composite_parts(m) if split_composite else None
        if parts is None:
            out.append(LinkingQuery(m.text, list(m.ids), m.pmid, m.start, m.end, m.type))
            continue
        for text, gold in parts:
            if gold and text:
                out.append(LinkingQuery(text, gold, m.pmid, m.start, m.end, m.type, is_part=True))
    return out


def _concept_mentions(corpus: PubTatorCorpus) -> Iterable[tuple[str, str]]:
    """(concept id, text) of every mention, composite ones through their lined-up parts only."""
    for m in corpus.mentions:
        if not m.is_composite:
            yield "|".join(m.ids), m.text
            continue
        for text, gold in _composite_parts(m) or []:
            yield "|".join(gold), text


def mention_concept_counts(corpus: PubTatorCorpus) -> Counter:
    """How many mentions the annotators linked to each concept (canonical id, `+` ids joined
    with `|`): the corpus prior of `ConceptIndex`. Composite mentions count through
    their lined-up parts, as in `mention_aliases`."""
    return Counter(cid for cid, text in _concept_mentions(corpus) if cid and text.strip())


def mention_aliases(corpus: PubTatorCorpus) -> list[tuple[str, str]]:
    """Distinct (concept id, normalised mention) pairs to add to a KB as aliases.

    The concept id is the mention's id field in canonical form (`+` ids joined with `|`, the
    way a concept with several ids is spelt in the concept table). Composite mentions are
    used only through their lined-up part texts: the whole text "breast and ovarian cancer"
    names neither concept.
    """
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []

    def add(cid: str, text: str) -> None:
        key = (cid, normalize_name(text))
        if key[0] and key[1] and key not in seen:
            seen.add(key)
            out.append(key)

    for cid, text in _concept_mentions(corpus):
        add(cid, text)
    return out


def split_folds(path: str | Path, folds: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(held-out lines, training lines) of each of `folds` document-level folds of a PubTator file,
    documents dealt out in a seeded shuffle, each kept as its own lines. Cross-fitting needs it:
    a model trained on the other folds gives a fold candidates it has not seen (e.g. the
    reranker's training lists, `spacy_el.sap.rerank.train`), as the linker will at serving time."""
    corpus = read_pubtator(path)  # errors name the file and line before anything is split
    if not 2 <= folds <= len(corpus.docs):
        raise InputError(f"{path}: folds={folds}; use 2 to {len(corpus.docs)} (its number of documents)")
    blocks: list[list[str]] = []
    block: list[str] = []
    for _, line in read_lines(path):
        if line.strip():
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    if len(blocks) != len(corpus.docs):
        raise InputError(f"{path}: {len(corpus.docs)} documents but {len(blocks)} blank-line separated blocks; "
                         "separate each document from the next by one blank line")
    order = list(range(len(blocks)))
    Random(seed).shuffle(order)
    fold_of = {doc: i % folds for i, doc in enumerate(order)}
    out = []
    for fold in range(folds):
        held = [line for i, b in enumerate(blocks) if fold_of[i] == fold for line in (*b, "")]
        rest = [line for i, b in enumerate(blocks) if fold_of[i] != fold for line in (*b, "")]
        out.append((held, rest))
    return out


def write_folds(path: str | Path, output_dir: str | Path, folds: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """`split_folds` written as `OUTPUT_DIR/fold{i}/heldout.txt` and `.../train.txt` (each file
    whole or not at all); their paths, fold by fold."""
    paths = []
    for i, (held, rest) in enumerate(split_folds(path, folds, seed)):
        fold_dir = Path(output_dir) / f"fold{i}"
        for name, lines in (("heldout.txt", held), ("train.txt", rest)):
            with atomic_write(fold_dir / name) as f:
                f.write("\n".join(lines) + "\n")
        paths.append((fold_dir / "heldout.txt", fold_dir / "train.txt"))
    return paths
