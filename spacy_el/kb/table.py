"""The concept table: one row per (concept id, name), the unit every KB reader produces,
pretraining pairs are drawn from and the concept index is built over.

A table reads from and writes to TSV (`from_tsv`, `to_tsv`: what every KB reader accepts); an
index keeps its table as columns (`to_columns`): per column one `\n`-separated UTF-8 blob and the offset of every value in
it, as `.npy` files opened memory-mapped. A table of 10M names then opens at once and a search
decodes only the rows it returns; the whole column is still one C-level `split` away.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, MutableSequence, Sequence, overload

import numpy as np

from spacy_el.ids import id_problem
from spacy_el.io import InputError, atomic_write, read_lines

COLUMNS = ("ids", "names", "sources")


class StringColumn(Sequence[str]):
    """A read-only column of strings over a `\n`-separated UTF-8 blob and the start offset of each
    value (plus the blob's end), typically memory-mapped (module docstring)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            return self._decode(start, stop)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self.blob[self.offsets[i]:self.offsets[i + 1] - 1].tobytes().decode("utf8")

    def _decode(self, start: int, stop: int) -> list[str]:
        if stop <= start:
            return []
        return self.blob[self.offsets[start]:self.offsets[stop] - 1].tobytes().decode("utf8").split("\n")

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 100_000):
            yield from self._decode(start, min(start + 100_000, len(self)))

    def tolist(self) -> list[str]:
        return self._decode(0, len(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StringColumn, list, tuple)):
            return len(self) == len(other) and self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics: equal by value

    @classmethod
    def open(cls, directory: Path, name: str, mmap: bool = True) -> "StringColumn":
        blob, offsets = (load_npy(directory / f"{name}.{part}.npy", mmap) for part in ("blob", "offsets"))
        if len(offsets) and (offsets[-1] != len(blob) or offsets[0] != 0):
            raise InputError(f"{directory / f'{name}.blob.npy'}: {len(blob)} bytes, but its offsets end at "
                             f"{offsets[-1]}: the index directory is damaged or mixes two builds; rebuild the index")
        return cls(blob, offsets)


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """A `.npy` file of an index directory (memory-mapped), or an error naming it when it is missing
    or cut short (numpy's own says "mmap length is greater than file size", without the file)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise InputError(f"{path}: missing; the index directory is incomplete: rebuild the index") from None
    except (ValueError, EOFError, OSError) as err:
        raise InputError(f"{path}: truncated or damaged ({err}); rebuild the index (or copy it again whole)") from None


class ColumnsWriter:
    """Writes string columns chunk by chunk (a streaming index build never holds its whole table):
    the blobs grow as raw files and become `.npy` files on `close`."""

    def __init__(self, directory: str | Path, names: Sequence[str] = COLUMNS) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.names = tuple(names)
        self._raw = [open(self.directory / f"{n}.blob.raw", "wb") for n in self.names]
        self._lengths: list[list[np.ndarray]] = [[] for _ in self.names]

    def add(self, rows: Sequence[Sequence[str]]) -> None:
        """Append rows (one value per column, in the writer's column order)."""
        for col, (name, raw) in enumerate(zip(self.names, self._raw)):
            encoded = [row[col].encode("utf8") for row in rows]
            if any(b"\n" in e for e in encoded):
                raise InputError(f"a {name} value holds a newline; it cannot be stored in a concept table")
            raw.write(b"".join(e + b"\n" for e in encoded))
            self._lengths[col].append(np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded)))

    def close(self) -> None:
        from numpy.lib.format import open_memmap

        for name, raw, lengths in zip(self.names, self._raw, self._lengths):
            raw.close()
            sizes = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
            offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            np.save(self.directory / f"{name}.offsets.npy", offsets)
            raw_path = self.directory / f"{name}.blob.raw"
            if not offsets[-1]:  # nothing to map
                np.save(self.directory / f"{name}.blob.npy", np.zeros(0, dtype=np.uint8))
                raw_path.unlink()
                continue
            blob = open_memmap(self.directory / f"{name}.blob.npy", mode="w+", dtype=np.uint8, shape=(int(offsets[-1]),))
            with open(raw_path, "rb") as f:
                pos = 0
                while chunk := f.read(1 << 24):
                    blob[pos:pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                    pos += len(chunk)
            blob.flush()
            del blob
            raw_path.unlink()

    def __enter__(self) -> "ColumnsWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            for raw in self._raw:
                raw.close()


@dataclass
class ConceptTable:
    """Parallel columns: `ids[i]` is the concept of `names[i]`; `sources[i]` says where the
    name came from (the KB, or a corpus file whose mentions were added as aliases)."""

    ids: MutableSequence[str] = field(default_factory=list)  # a StringColumn when opened from columns
    names: MutableSequence[str] = field(default_factory=list)
    sources: MutableSequence[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, concept_id: str, name: str, source: str = "kb") -> None:
        if not isinstance(self.ids, list):  # opened from columns: read-only until first changed
            self.ids, self.names, self.sources = (list(c) for c in (self.ids, self.names, self.sources))
        self.ids.append(concept_id)
        self.names.append(name)
        self.sources.append(source)

    def rows(self) -> Iterator[tuple[str, str, str]]:
        return zip(self.ids, self.names, self.sources)

    @property
    def n_concepts(self) -> int:
        return len(set(self.ids))

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str] | tuple[str, str, str]]) -> "ConceptTable":
        table = cls()
        for row in rows:
            table.add(*row)
        return table

    def to_columns(self, directory: str | Path) -> None:
        """Write the columns into `directory` (module docstring)."""
        rows = self.rows()
        with ColumnsWriter(directory) as writer:
            while chunk := list(itertools.islice(rows, 100_000)):  # a 10M-row table is never copied whole
                writer.add(chunk)

    @classmethod
    def from_columns(cls, directory: str | Path, mmap: bool = True) -> "ConceptTable":
        """Open columns written by `to_columns` (memory-mapped unless `mmap` is false)."""
        directory = Path(directory)
        columns = [StringColumn.open(directory, name, mmap) for name in COLUMNS]
        if len({len(c) for c in columns}) != 1:
            raise InputError(f"{directory}: the table's columns differ in length; rebuild the index")
        return cls(*columns)

    def to_tsv(self, path: str | Path) -> None:
        """Write `concept_id<TAB>name<TAB>source` rows atomically."""
        with atomic_write(path) as f:
            for cid, name, source in self.rows():
                f.write(f"{cid}\t{name}\t{source}\n")

    @classmethod
    def from_tsv(cls, path: str | Path) -> "ConceptTable":
        """Read `concept_id<TAB>name[<TAB>source]` rows; bad rows raise an error naming file and line."""
        table = cls()
        for lineno, line in read_lines(path):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) not in (2, 3):
                raise InputError(
                    f"{path}, line {lineno}: expected 2 or 3 tab-separated columns "
                    f"(concept_id, name[, source]), found {len(cols)}"
                )
            cid, name = cols[0].strip(), cols[1].strip()
            if not cid or not name:
                raise InputError(f"{path}, line {lineno}: empty concept id or name")
            if problem := id_problem(cid):
                raise InputError(f"{path}, line {lineno}: concept id {cid!r} {problem}; expected "
                                 "concept_id TAB name [TAB source], e.g. MESH:D003920 TAB diabetes mellitus")
            table.add(cid, name, cols[2].strip() if len(cols) == 3 and cols[2].strip() else "kb")
        return table
