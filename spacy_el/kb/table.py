"""The concept table: one row per (concept id, name), the unit every KB reader produces,
pretraining pairs are drawn from and the concept index is built over."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from spacy_el.io import InputError, atomic_write, read_lines


@dataclass
class ConceptTable:
    """Parallel columns: `ids[i]` is the concept of `names[i]`; `sources[i]` says where the
    name came from (the KB, or a corpus file whose mentions were added as aliases)."""

    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, concept_id: str, name: str, source: str = "kb") -> None:
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
            table.add(cid, name, cols[2].strip() if len(cols) == 3 and cols[2].strip() else "kb")
        return table
