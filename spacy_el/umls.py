"""UMLS preprocessing: stream `MRCONSO.RRF` (+ optional `MRSTY.RRF`) into the concept table the
index is built over and the synonym pairs SAP pretraining learns from.

The real MRCONSO has ~15M rows (2 GB), so nothing here holds all rows. Rows are grouped by CUI
and each group is written as soon as it is complete. A release's MRCONSO is sorted by CUI, so
the groups are simply runs of consecutive rows; that order is *checked*, not assumed: when a
CUI sorts below the one before it, the run is abandoned (nothing was published yet, outputs are
atomic) and the filtered rows are sorted externally (sorted chunks on disk, `heapq.merge`),
which needs memory for one chunk only. Semantic types from MRSTY are held as two compact
arrays (CUI number, type-combination id), ~6 bytes per CUI.

Outputs (each written atomically) in the output directory:
- `concepts.tsv`: `CUI<TAB>name`, one row per distinct normalised name, grouped by CUI with the
  canonical name first (TS=P and ISPREF=Y, preferring STT=PF; else the first row). It is a
  `spacy_el.kb.table.ConceptTable` TSV.
- `pairs.tsv`: `CUI<TAB>name<TAB>name`, synonym pairs for pretraining (≤ `max_pairs` per CUI,
  seeded), made by `spacy_el.sap.pairs`.
- `semtypes.tsv` (with MRSTY): `CUI<TAB>TUI|TUI<TAB>type name|type name`.

One module because the streaming reader, the external sort it falls back to and
the writers share one pass and its statistics.
"""
from __future__ import annotations

import contextlib
import heapq
import re
import tempfile
import zlib
from array import array
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from spacy_el.ids import normalize_name
from spacy_el.io import InputError, atomic_write
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.pairs import make_pairs

if TYPE_CHECKING:  # imported where it is used, as only MRSTY users need it
    from spacy_el.kb.types import ConceptTypes

#: MRCONSO column positions (UMLS Reference Manual, "Concept Names and Sources").
CUI, LAT, TS, LUI, STT, SUI, ISPREF, AUI, SAUI, SCUI, SDUI, SAB, TTY, CODE, STR, SRL, SUPPRESS, CVF = range(18)
N_MRCONSO_COLS = 18
N_MRSTY_COLS = 6
#: SUPPRESS values that mark a name as suppressible (O obsolete, E editor, Y source-asserted).
SUPPRESSIBLE = frozenset({"O", "E", "Y"})
_CUI = re.compile(r"^C(\d+)$")
#: NLM's semantic groups (v04), bundled; see spacy_el/data/README.md.
SEMGROUPS = Path(__file__).parent / "data" / "SemGroups_v04.txt"


@dataclass(frozen=True)
class UmlsFilter:
    """Which MRCONSO rows count. Defaults follow SapBERT: English, no suppressible names."""

    languages: frozenset[str] | None = frozenset({"ENG"})  # None: every language
    include_suppressible: bool = False
    sabs: frozenset[str] | None = None  # None: every source vocabulary
    exclude_sabs: frozenset[str] = frozenset()
    tuis: frozenset[str] | None = None  # None: every semantic type (needs MRSTY otherwise)


@dataclass
class UmlsStats:
    rows: int = 0
    bad_rows: int = 0
    mrsty_bad_rows: int = 0
    rows_kept: int = 0
    concepts: int = 0
    names: int = 0
    pairs: int = 0
    concepts_dropped_by_semtype: int = 0
    externally_sorted: bool = False
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class _Unsorted(Exception):
    """MRCONSO is not grouped by CUI: switch to the external sort."""


# --------------------------------------------------------------------------- inputs


def find_mrconso(meta: str | Path) -> Path:
    """`meta` is a UMLS `META` directory or the MRCONSO file itself."""
    meta = Path(meta)
    if not meta.exists():
        raise InputError(f"{meta}: not found; pass a UMLS META directory or its MRCONSO.RRF file")
    if meta.is_dir():
        path = meta / "MRCONSO.RRF"
        if not path.is_file():
            raise InputError(
                f"{meta}: directory has no MRCONSO.RRF; pass the META directory of a UMLS release "
                "(made by MetamorphoSys, or the full release's META folder) or the file itself"
            )
        return path
    return meta


def _rrf_rows(path: Path, n_cols: int, skip_bad_rows: bool, stats: UmlsStats
              ) -> Iterator[tuple[int, list[str]]]:
    """(line number, columns) of each row of a `|`-delimited RRF file (every row ends with `|`).
    Counts go to `stats` when the file is done (per-row attribute updates cost ~10%)."""
    lineno = blank = bad = 0
    n_fields = n_cols + 1
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    if skip_bad_rows:
                        bad += 1
                        continue
                    raise InputError(
                        f"{path}, line {lineno}: not valid UTF-8 ({err.reason} at byte {err.start}); UMLS "
                        "files are UTF-8: re-extract the file, or pass --skip-bad-rows to skip such rows"
                    ) from None
                cols = line.rstrip("\r\n").split("|")
                if len(cols) != n_fields or cols[-1]:
                    if not line.strip():
                        blank += 1
                        continue
                    if skip_bad_rows:
                        bad += 1
                        continue
                    raise InputError(
                        f"{path}, line {lineno}: expected {n_cols} `|`-separated columns each ending "
                        f"with `|`, found {len(cols) - 1 if not cols[-1] else len(cols)}; "
                        "is this the right file? (pass --skip-bad-rows to skip such rows)"
                    )
                yield lineno, cols
    finally:
        stats.rows += lineno - blank
        stats.bad_rows += bad


def load_semgroups(path: str | Path | None = None) -> dict[str, set[str]]:
    """Semantic group abbreviation (`DISO`) → its TUIs, from `SemGroups_v04.txt` (bundled)."""
    path = Path(path) if path is not None else SEMGROUPS
    if not path.is_file():
        raise InputError(f"{path}: semantic groups file not found (NLM's SemGroups.txt, "
                         "`GROUP|Group name|TUI|Type name` per line)")
    text = path.read_text("utf-8")
    groups: dict[str, set[str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 4:
            raise InputError(f"{path}, line {lineno}: expected `GROUP|Group name|TUI|Type name`")
        groups.setdefault(cols[0], set()).add(cols[2])
    return groups


def resolve_tuis(tuis: Iterable[str] = (), groups: Iterable[str] = (), semgroups: str | Path | None = None
                 ) -> frozenset[str] | None:
    """The TUIs selected by `--tui` and `--group` (None when neither is given)."""
    tuis, groups = list(tuis), list(groups)
    if not tuis and not groups:
        return None
    table = load_semgroups(semgroups) if groups else {}
    out = set(tuis)
    for g in groups:
        if g not in table:
            raise InputError(f"unknown semantic group {g!r}; choose from {', '.join(sorted(table))}")
        out |= table[g]
    for t in tuis:
        if not re.fullmatch(r"T\d{3}", t):
            raise InputError(f"--tui {t!r} is not a semantic type id like T047")
    return frozenset(out)


class SemanticTypes:
    """CUI → TUIs from MRSTY in compact arrays (sorted CUI numbers + type-combination ids)."""

    def __init__(self, path: str | Path, skip_bad_rows: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: MRSTY file not found")
        self.names: dict[str, str] = {}  # TUI → type name
        combos: dict[tuple[str, ...], int] = {}
        cuis, ids = array("q"), array("i")
        stats = UmlsStats()
        rows_iter = (cols for _, cols in _rrf_rows(self.path, N_MRSTY_COLS, skip_bad_rows, stats))
        for cui, rows in groupby(rows_iter, key=lambda c: c[0]):
            m = _CUI.match(cui)
            if not m:
                raise InputError(f"{self.path}: CUI {cui!r} is not of the form C0000000")
            tuis = []
            for cols in rows:
                self.names[cols[1]] = cols[3]
                tuis.append(cols[1])
            combo = tuple(sorted(set(tuis)))
            cuis.append(int(m.group(1)))
            ids.append(combos.setdefault(combo, len(combos)))
        self.bad_rows = stats.bad_rows
        self.combos = list(combos)
        cui_arr, id_arr = np.frombuffer(cuis, dtype=np.int64), np.frombuffer(ids, dtype=np.int32)
        order = np.argsort(cui_arr, kind="stable")
        self._cuis, self._ids = cui_arr[order], id_arr[order]
        # A CUI split over non-adjacent rows: merge its combinations (rare; keeps lookups exact).
        if len(self._cuis) and (dup := np.flatnonzero(self._cuis[1:] == self._cuis[:-1])).size:
            keep = np.ones(len(self._cuis), dtype=bool)
            for i in dup[::-1]:
                merged = tuple(sorted(set(self.combos[self._ids[i]]) | set(self.combos[self._ids[i + 1]])))
                self._ids[i] = combos.setdefault(merged, len(combos))
                keep[i + 1] = False
            self.combos = list(combos)
            self._cuis, self._ids = self._cuis[keep], self._ids[keep]

    def __len__(self) -> int:
        return len(self._cuis)

    def get(self, cui: str) -> tuple[str, ...]:
        m = _CUI.match(cui)
        if not m:
            return ()
        key = int(m.group(1))
        i = int(np.searchsorted(self._cuis, key))
        return self.combos[self._ids[i]] if i < len(self._cuis) and self._cuis[i] == key else ()


# --------------------------------------------------------------------------- grouping


def _name_rank(cols: list[str]) -> int:
    """Higher is a better canonical name: TS=P and ISPREF=Y first, STT=PF breaking ties."""
    return 2 * (cols[TS] == "P" and cols[ISPREF] == "Y") + (cols[STT] == "PF")


def _kept_rows(path: Path, filt: UmlsFilter, skip_bad_rows: bool, stats: UmlsStats,
               progress: bool) -> Iterator[tuple[str, int, str]]:
    """(CUI, canonical-name rank, name) of each row the filter keeps, in file order."""
    bar = tqdm(desc=f"reading {path.name}", unit=" rows", unit_scale=True, disable=not progress,
               mininterval=1.0)
    # The filter, unpacked into locals: this loop runs 15M times on a real release.
    langs, sabs, exclude = filt.languages, filt.sabs, filt.exclude_sabs
    suppressible = frozenset() if filt.include_suppressible else SUPPRESSIBLE
    last = kept = 0
    try:
        for lineno, cols in _rrf_rows(path, N_MRCONSO_COLS, skip_bad_rows, stats):
            if lineno - last >= 50_000:
                bar.update(lineno - last)
                last = lineno
            if ((langs is None or cols[LAT] in langs) and cols[SUPPRESS] not in suppressible
                    and (sabs is None or cols[SAB] in sabs) and cols[SAB] not in exclude
                    and (name := " ".join(cols[STR].split()))):
                kept += 1
                yield cols[CUI], _name_rank(cols), name
    finally:
        stats.rows_kept += kept
        bar.close()


def _contiguous_groups(rows: Iterable[tuple[str, int, str]]) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """Runs of rows with the same CUI; raises `_Unsorted` when CUIs are not in ascending order."""
    prev = None
    for cui, group in groupby(rows, key=lambda r: r[0]):
        if prev is not None and cui < prev:
            raise _Unsorted(f"CUI {cui} after {prev}")
        prev = cui
        yield cui, [(rank, name) for _, rank, name in group]


def _external_groups(rows: Iterable[tuple[str, int, str]], tmpdir: Path, chunk_rows: int
                     ) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """Group rows by CUI in any order: sorted chunks on disk, merged; file order kept per CUI."""
    chunks: list[Path] = []

    def spill(buf: list[tuple[str, int, int, str]]) -> None:
        buf.sort()
        path = tmpdir / f"chunk{len(chunks):05d}.tsv"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(f"{cui}\t{seq:012d}\t{rank}\t{name}\n" for cui, seq, rank, name in buf)
        chunks.append(path)

    buf: list[tuple[str, int, int, str]] = []
    for seq, (cui, rank, name) in enumerate(rows):
        buf.append((cui, seq, rank, name))
        if len(buf) >= chunk_rows:
            spill(buf)
            buf = []
    if buf:
        spill(buf)
    files: list[IO[str]] = [p.open(encoding="utf-8") for p in chunks]
    try:
        merged = (line.rstrip("\n").split("\t", 3) for line in heapq.merge(*files))
        for cui, group in groupby(merged, key=lambda r: r[0]):
            yield cui, [(int(rank), name) for _, _, rank, name in group]
    finally:
        for f in files:
            f.close()


def concept_names(rows: list[tuple[int, str]]) -> list[str]:
    """Distinct names of one concept (dedupe on lowercase + collapsed whitespace, first spelling
    kept), the canonical name first."""
    best = max(range(len(rows)), key=lambda i: (rows[i][0], -i))
    seen: set[str] = set()
    names: list[str] = []
    for _, name in [rows[best]] + rows:
        key = normalize_name(name)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def concept_pairs(cui: str, names: list[str], max_pairs: int, seed: int) -> list[tuple[str, str, str]]:
    """One concept's synonym pairs from the SAP pair generator, one concept at a time so memory
    stays bounded. The RNG is seeded per concept from (seed, CUI): the sample of a concept does
    not depend on which other concepts were kept, and concepts with equally many names do not
    all get the same sampled positions."""
    table = ConceptTable(ids=[cui] * len(names), names=names, sources=["kb"] * len(names))
    return make_pairs(table, max_pairs_per_concept=max_pairs, seed=zlib.crc32(f"{seed}:{cui}".encode()))


# --------------------------------------------------------------------------- main job


def preprocess_umls(
    meta: str | Path,
    output_dir: str | Path,
    *,
    mrsty: str | Path | None = None,
    filt: UmlsFilter = UmlsFilter(),
    max_pairs: int = 50,
    seed: int = 0,
    skip_bad_rows: bool = False,
    progress: bool = True,
    sort_chunk_rows: int = 200_000,
) -> UmlsStats:
    """MRCONSO (+ MRSTY) → `concepts.tsv`, `pairs.tsv` (+ `semtypes.tsv`) in `output_dir`.

    `meta` is a META directory (its MRSTY.RRF is used when present and `mrsty` is not given)
    or an MRCONSO file. A semantic-type filter (`filt.tuis`) needs MRSTY."""
    mrconso = find_mrconso(meta)
    if mrsty is None and Path(meta).is_dir() and (Path(meta) / "MRSTY.RRF").is_file():
        mrsty = Path(meta) / "MRSTY.RRF"
    if filt.tuis is not None and mrsty is None:
        raise InputError("a semantic type/group filter needs MRSTY.RRF: pass --mrsty PATH "
                         "(or a META directory that contains it)")
    if max_pairs < 1:
        raise InputError(f"--max-pairs must be at least 1, got {max_pairs}")
    semtypes = SemanticTypes(mrsty, skip_bad_rows) if mrsty is not None else None
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")

    def run(grouped: bool) -> UmlsStats:
        stats = UmlsStats(mrsty_bad_rows=semtypes.bad_rows if semtypes else 0)
        rows = _kept_rows(mrconso, filt, skip_bad_rows, stats, progress)
        outputs = [out / "concepts.tsv", out / "pairs.tsv"] + ([out / "semtypes.tsv"] if semtypes else [])
        with contextlib.ExitStack() as stack:
            concepts_f, pairs_f = (stack.enter_context(atomic_write(p)) for p in outputs[:2])
            sty_f = stack.enter_context(atomic_write(outputs[2])) if semtypes else None
            if grouped:
                groups = _contiguous_groups(rows)
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".umls-sort-", dir=out))
                groups = _external_groups(rows, Path(tmp), sort_chunk_rows)
            for cui, group in groups:
                tuis = semtypes.get(cui) if semtypes else ()
                if filt.tuis is not None and not (set(tuis) & filt.tuis):
                    stats.concepts_dropped_by_semtype += 1
                    continue
                names = concept_names(group)
                stats.concepts += 1
                stats.names += len(names)
                concepts_f.writelines(f"{cui}\t{n}\n" for n in names)
                for row in concept_pairs(cui, names, max_pairs, seed):
                    pairs_f.write("\t".join(row) + "\n")
                    stats.pairs += 1
                if sty_f is not None:
                    sty_f.write(f"{cui}\t{'|'.join(tuis)}\t{'|'.join(semtypes.names[t] for t in tuis)}\n")
        stats.outputs = [str(p) for p in outputs]
        stats.externally_sorted = not grouped
        return stats

    out.mkdir(parents=True, exist_ok=True)
    try:
        return run(grouped=True)
    except _Unsorted as err:
        if progress:
            print(f"{mrconso} is not sorted by CUI ({err}); sorting externally")
        return run(grouped=False)


def concept_types_from_mrsty(mrsty: str | Path, semgroups: str | Path | None = None,
                             concept_ids: Iterable[str] | None = None) -> "ConceptTypes":
    """UMLS semantic types (`T047`) and their groups (`DISO`) per CUI from MRSTY, for a concept
    index's `types.tsv` (only `concept_ids` when given, e.g. an index table's ids)."""
    from spacy_el.kb.types import ConceptTypes

    sty = SemanticTypes(mrsty)
    group_of = {tui: g for g, tuis in load_semgroups(semgroups).items() for tui in tuis}
    ids = dict.fromkeys(concept_ids) if concept_ids is not None else None
    out: dict[str, list[str]] = {}
    for cid in (ids if ids is not None else _all_cuis(sty)):
        tuis = [t for part in cid.split("|") for t in sty.get(part.split(":")[-1])]
        if tuis:
            out[cid] = [*tuis, *(group_of[t] for t in tuis if t in group_of)]
    return ConceptTypes(out, dict(sty.names))


def _all_cuis(sty: SemanticTypes) -> Iterator[str]:
    return (f"C{n:07d}" for n in sty._cuis.tolist())
