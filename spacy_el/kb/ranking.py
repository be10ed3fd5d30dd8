"""From ranked names to ranked concepts: `Candidate`, the corpus prior and the vectorised
collapse that `ConceptIndex.search` applies to what FAISS returns.

A concept has many names, so FAISS's top names hold repeats of a few concepts; `collapse` keeps
each concept's best name and cuts to k concepts, over a whole batch of queries at once in numpy.

A *corpus prior* breaks the near-ties that dominate the errors on annotated corpora: MEDIC gives
one text to several concepts ("Lipoma" is both `MESH:D008067` and `OMIM:151900`; "FAP" two MeSH
concepts), and an encoder scores such names alike. Ranking by `cosine + prior_weight · log(1 + n)`,
with n the number of train mentions the annotators linked to the concept, prefers the concepts a
corpus actually uses. `Candidate.score` stays the cosine. On disk the prior is `prior.tsv`
(`concept_id<TAB>count`) inside the index directory.

This is the part of the index that knows about concepts, names and corpora; `spacy_el.kb.index`
holds the FAISS index and its files.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Sequence

import numpy as np

from spacy_el.ids import id_owners, kb_spelling, normalize_name
from spacy_el.io import InputError, atomic_write, read_lines
from spacy_el.kb.table import ConceptTable, load_npy

#: The `source` of a KB's own names (an alias's source is the corpus file it came from).
KB_SOURCE = "kb"
#: Weight of log(1 + train mentions of the concept) added to the cosine when ranking concepts
#: (tuned on NCBI-disease and BC5CDR *dev*; 0 turns the prior off).
DEFAULT_PRIOR_WEIGHT = 0.02
#: Cosines equal to this many decimals are ties (see `collapse`).
TIE_DECIMALS = 5


class Candidate(NamedTuple):
    """One linked concept: its id, the cosine of its best-matching name, that name, where the
    name came from ("kb", a merged KB's file or the corpus file whose mention was added as an
    alias) and, when a reranker reordered the candidates, its score of the mention in context
    (None otherwise)."""

    concept_id: str
    score: float
    name: str
    source: str
    rerank_score: Optional[float] = None


class RowCodes:
    """A concept table as integer arrays for `collapse` (see `row_codes`): per row its text (the
    name under `normalize_name`) and its concept as numbers, and whether it is a KB name (not a
    corpus alias). Saved beside an index's table columns (`save`/`open`, memory-mapped), so a
    10M-name index does not rebuild them on its first search."""

    FILES = ("text", "concept", "is_kb")

    def __init__(self, text: np.ndarray, concept: np.ndarray, is_kb: np.ndarray, n_concepts: int,
                 ids: Optional[Sequence[str]] = None, concept_numbers: Optional[dict[str, int]] = None) -> None:
        self.text, self.concept, self.is_kb, self.n_concepts = text, concept, is_kb, n_concepts
        self._ids, self._concept_numbers = ids, concept_numbers

    @property
    def concept_numbers(self) -> dict[str, int]:
        """concept id → its number (in number order); built from the ids on first use (only a prior needs it)."""
        if self._concept_numbers is None:
            numbers: dict[str, int] = {}
            for cid in self._ids or ():
                numbers.setdefault(cid, len(numbers))
            self._concept_numbers = numbers
        return self._concept_numbers

    def save(self, directory: Path) -> None:
        for name in self.FILES:
            np.save(directory / f"codes.{name}.npy", getattr(self, name))

    @classmethod
    def open(cls, directory: Path, ids: Sequence[str], mmap: bool = True) -> Optional["RowCodes"]:
        """The saved codes of a table with these ids, or None when they are missing or stale."""
        paths = [directory / f"codes.{name}.npy" for name in cls.FILES]
        if not all(p.exists() for p in paths):
            return None
        text, concept, is_kb = (load_npy(p, mmap) for p in paths)
        if not len(text) == len(concept) == len(is_kb) == len(ids):
            return None
        return cls(text, concept, is_kb, int(concept.max()) + 1 if len(concept) else 0, ids)


class RowCodesBuilder:
    """`RowCodes` of rows added chunk by chunk (the streaming index build), as `row_codes` does at once."""

    def __init__(self) -> None:
        self._texts: dict[str, int] = {}
        self._concepts: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Append (concept id, name, source) rows."""
        rows = list(rows)
        texts, concepts = self._texts, self._concepts
        self._parts.append((
            np.fromiter((texts.setdefault(normalize_name(name), len(texts)) for _, name, _ in rows),
                        dtype=np.int64, count=len(rows)),
            np.fromiter((concepts.setdefault(cid, len(concepts)) for cid, _, _ in rows), dtype=np.int64,
                        count=len(rows)),
            np.fromiter((source == KB_SOURCE for _, _, source in rows), dtype=bool, count=len(rows))))

    def build(self, ids: Optional[Sequence[str]] = None) -> RowCodes:
        text, concept, is_kb = (np.concatenate([p[i] for p in self._parts]) if self._parts else
                                np.zeros(0, dtype=dtype) for i, dtype in enumerate((np.int64, np.int64, bool)))
        return RowCodes(text, concept, is_kb, len(self._concepts), ids, self._concepts)


def row_codes(table: ConceptTable) -> RowCodes:
    """Per table row, as arrays: its text (name up to case and spacing) and concept as integers
    and whether it is a KB name."""
    builder, rows = RowCodesBuilder(), table.rows()
    while chunk := list(itertools.islice(rows, 100_000)):
        builder.add(chunk)
    return builder.build(table.ids)


def concept_bonus(prior: dict[str, int], weight: float) -> dict[str, float]:
    """The prior's ranking bonus per concept id: weight · log(1 + train mentions)."""
    return {cid: weight * math.log1p(n) for cid, n in prior.items()} if weight else {}


def prior_bonus(prior: dict[str, int], weight: float, codes: RowCodes) -> np.ndarray:
    """`concept_bonus` as an array over the concept numbers of `codes`."""
    bonus = np.zeros(codes.n_concepts)
    for cid, b in concept_bonus(prior, weight).items():
        if cid in codes.concept_numbers:
            bonus[codes.concept_numbers[cid]] = b
    return bonus


def collapse(scores: np.ndarray, rows: np.ndarray, k: int, codes: RowCodes, bonus: np.ndarray,
             table: ConceptTable) -> list[list[Candidate]]:
    """Per query (a row of FAISS's `scores`/`rows`), the first k concepts in the order of their
    best names, each scored by its best name's cosine.

    Names with the same text up to case and spacing are one text: they share its best cosine
    (an int8 encoder scores identical texts with a little noise). Names rank by that cosine
    rounded to `TIE_DECIMALS` plus their concept's prior `bonus`; on a tie a corpus alias
    comes before a KB name, then the name's own cosine to one more decimal (of two spellings of
    one text, "ANIRIDIA" and "Aniridia", the one closer to the query's), then the later row.
    The later row is what FAISS happened to return first among equal inner products; stated
    here, the order does not move with the last bits of the BLAS sums (so links do not depend on
    the number of threads), and it is the better of the two on the benchmark corpora
    (benchmarks/RESULTS.md). Where a KB name and a train mention share a text, the alias records
    which concept the annotators meant, while the KB name is often attached to several concepts
    (MEDIC's "ANIRIDIA" and "Aniridia"). Sorting also repairs
    the slightly out-of-order scores of approximate indexes. Vectorised over the batch: the
    per-query Python this replaces was most of a fast encoder's linking time."""
    n_queries, depth = rows.shape
    valid = rows >= 0
    query = np.repeat(np.arange(n_queries), depth)[valid.ravel()]
    row = rows[valid]
    score = scores[valid].astype(np.float64)
    text, concept = codes.text[row], codes.concept[row]
    # the best score of each (query, text): the first of its group sorted by descending score
    by_text = np.lexsort((-score, text, query))
    head = np.ones(len(by_text), dtype=bool)
    head[1:] = (query[by_text][1:] != query[by_text][:-1]) | (text[by_text][1:] != text[by_text][:-1])
    text_score = np.empty_like(score)
    text_score[by_text] = score[by_text][head][np.cumsum(head) - 1]
    rank_key = -(np.round(text_score, TIE_DECIMALS) + bonus[concept])
    order = np.lexsort((-row, -np.round(score, TIE_DECIMALS + 1), codes.is_kb[row], rank_key, query))
    # each concept's first name in that order, then the first k concepts of each query
    _, first = np.unique(query[order] * codes.n_concepts + concept[order], return_index=True)
    chosen = order[np.sort(first)]
    starts = np.searchsorted(query[chosen], np.arange(n_queries))
    keep = chosen[np.arange(len(chosen)) - starts[query[chosen]] < k]
    out: list[list[Candidate]] = [[] for _ in range(n_queries)]
    names, sources, ids = table.names, table.sources, table.ids
    for q, r, sc in zip(query[keep].tolist(), row[keep].tolist(), text_score[keep].tolist()):
        out[q].append(Candidate(ids[r], sc, names[r], sources[r]))
    return out


def align_prior(table: ConceptTable, counts: dict[str, int], files: Iterable[str | Path] = ()
                ) -> tuple[dict[str, int], dict[str, Any]]:
    """Train-mention counts keyed by the table's spelling of each concept id (`MESH:C567755`
    joins `MESH:C567755|OMIM:613097`), without concepts absent from the table, and the summary
    an index keeps in `meta["prior"]` (weight `DEFAULT_PRIOR_WEIGHT`, files, counts, what was left out)."""
    owners, known = id_owners(table.ids), set(table.ids)
    aligned: Counter = Counter()
    for cid, n in counts.items():
        aligned[kb_spelling(owners, cid)] += int(n)
    prior = {cid: n for cid, n in aligned.items() if cid in known and n > 0}
    meta = {"weight": DEFAULT_PRIOR_WEIGHT, "files": [Path(f).name for f in files],
            "n_concepts": len(prior), "n_mentions": sum(prior.values()),
            "n_mentions_absent_from_kb": sum(n for c, n in aligned.items() if c not in known)}
    return prior, meta


def check_prior_weight(weight: float) -> float:
    """`weight` as a float, or an error saying what a prior weight may be."""
    if not isinstance(weight, (int, float)) or weight < 0 or not math.isfinite(weight):
        raise InputError(f"prior_weight={weight!r}: use a number >= 0 (0 turns the prior off)")
    return float(weight)


def align_alias_ids(kb: ConceptTable, aliases: ConceptTable) -> ConceptTable:
    """Spell each alias's concept id the way the KB does: a mention annotated `MESH:C567755`
    joins the KB concept `MESH:C567755|OMIM:613097`, so both collapse to one concept. Ids
    that span several KB concepts (or none) are kept as written."""
    owners = id_owners(kb.ids)
    return ConceptTable.from_rows((kb_spelling(owners, cid), name, source) for cid, name, source in aliases.rows())


def read_prior(path: Path) -> dict[str, int]:
    """`concept_id<TAB>count` rows; a bad row is an error naming file and line."""
    prior: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip().isdigit():
            raise InputError(f"{path}, line {lineno}: expected concept_id<TAB>count (a whole number), "
                             f"found {line[:80]!r}; rebuild the index or fix the row")
        prior[cols[0].strip()] = int(cols[1])
    return prior


def write_prior(path: Path, prior: dict[str, int]) -> None:
    """Write `prior` as `read_prior` reads it (atomically)."""
    with atomic_write(path) as f:
        f.writelines(f"{cid}\t{n}\n" for cid, n in sorted(prior.items()))
