"""Plain documents to annotate: PubTator, JSONL (`{"id": ..., "text": ...}` per line) or Parquet
(`id` and `text` columns), read as a stream. A bad row is an error naming the file and line (or
Parquet row) and the fix, or, with `skip_bad`, is skipped and counted in a `BadRows`.

The input is a sequence of numbered *records*: a JSONL line (blank lines included), a PubTator
document, a Parquet row. The numbers depend only on the file, so output shards keyed by them
line up between runs and between engines. `plan_splits` cuts a file into `Split`s at record
starts (byte ranges of a text file, row groups of a Parquet file) with the number of their first
record and line, so each can be read on its own, e.g. by one Ray Data read task
(`spacy_el.annotate`), and still report file and line.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from spacy_el.corpora.pubtator import parse_pubtator
from spacy_el.io import InputError, read_lines

FORMATS = ("auto", "pubtator", "jsonl", "parquet")


@dataclass
class InputDoc:
    """One document to annotate; `title` is set for PubTator input (its `|t|` line), so the
    PubTator output can split the text back into title and abstract."""

    id: str
    text: str
    title: Optional[str] = None
    #: where it was read: `FILE, line N` (`FILE, row N` of a Parquet file), for messages about it
    where: str = ""


def too_long(doc: InputDoc, max_length: int) -> Optional[str]:
    """What is wrong with a document longer than a pipeline's `nlp.max_length` (spaCy would stop
    the whole job with its E088 deep inside `nlp.pipe`), or None."""
    if len(doc.text) <= max_length:
        return None
    return (f"{doc.where or doc.id}: a text of {len(doc.text):,} characters, longer than the pipeline's "
            f"max_length ({max_length:,}); split the document")


@dataclass
class BadRows:
    """Bad input rows skipped (with `skip_bad`): how many, and the first messages."""

    n: int = 0
    examples: list[str] = field(default_factory=list)


def input_format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if "pubtator" in name or name.endswith(".txt"):
        return "pubtator"
    raise InputError(f"{path}: cannot tell the input format from the file name; pass --format "
                     "pubtator, jsonl or parquet")


#: A record's content: its document, what is wrong with it (a message naming file and line), or
#: None for a blank JSONL line.
Item = Union[InputDoc, str, None]
#: How a PubTator document starts: its title line.
_PUBTATOR_TITLE = re.compile(rb"^[^\t|\r\n]+\|t\|")


@dataclass(frozen=True)
class Split:
    """A piece of one input file that can be read on its own: bytes `[start, end)` of a text
    file, cut where a record starts, or row groups `[start, end)` of a Parquet file. Its records
    are numbered from `first_record` (over the whole file) and its lines from `first_line`."""

    path: str
    fmt: str
    start: int
    end: int
    first_record: int
    n_records: int
    first_line: int = 1


def plan_splits(path: str | Path, fmt: str = "auto", target_bytes: int = 32 << 20) -> list[Split]:
    """Cut `path` into splits of about `target_bytes` (Parquet: whole row groups). A text file is
    scanned once for record starts and line ends, without parsing; the records themselves are
    read by `read_split`."""
    path = _existing(path)
    fmt = input_format(path, fmt)
    if fmt == "parquet":
        meta = _parquet_file(path).metadata
        splits, first = [], 0
        for group in range(meta.num_row_groups):
            n = meta.row_group(group).num_rows
            splits.append(Split(str(path), fmt, group, group + 1, first, n))
            first += n
        return splits
    starts_record = (lambda line: True) if fmt == "jsonl" else _PUBTATOR_TITLE.match
    splits: list[Split] = []
    start = offset = record = 0
    first_record, first_line = 0, 1
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if starts_record(raw):
                if record > first_record and offset - start >= target_bytes:
                    splits.append(Split(str(path), fmt, start, offset, first_record, record - first_record, first_line))
                    start, first_record, first_line = offset, record, lineno
                record += 1
            offset += len(raw)
    if offset > start:
        splits.append(Split(str(path), fmt, start, offset, first_record, record - first_record, first_line))
    return splits


def read_split(split: Split) -> Iterator[tuple[int, Item]]:
    """(record number, item) for every record of `split`, in order."""
    path = Path(split.path)
    if split.fmt == "parquet":
        yield from _parquet_records(path, split)
        return
    lines = read_lines(path, split.start, split.end, split.first_line)
    if split.fmt == "pubtator":
        for i, doc in enumerate(parse_pubtator(lines, path).docs):
            yield split.first_record + i, InputDoc(doc.pmid, doc.text, doc.title, f"{path}, line {doc.line}")
        return
    for i, (lineno, line) in enumerate(lines):
        doc = _jsonl_doc(line) if line.strip() else None
        if isinstance(doc, InputDoc):
            doc.where = f"{path}, line {lineno}"
        yield split.first_record + i, f"{path}, line {lineno}: {doc}" if isinstance(doc, str) else doc


def read_records(path: str | Path, fmt: str = "auto") -> Iterator[tuple[int, Item]]:
    """Every record of `path` in order (the whole file as one split: nothing is scanned first)."""
    path = _existing(path)
    fmt = input_format(path, fmt)
    if fmt == "parquet":
        meta = _parquet_file(path).metadata
        yield from read_split(Split(str(path), fmt, 0, meta.num_row_groups, 0, meta.num_rows))
    else:
        yield from read_split(Split(str(path), fmt, 0, path.stat().st_size, 0, -1))


def read_documents(path: str | Path, fmt: str = "auto", *, skip_bad: bool = False,
                   bad: BadRows | None = None) -> Iterator[InputDoc]:
    """The documents of `path`, in order. A bad row raises an `InputError` naming the file and
    line (or row); with `skip_bad` it is skipped and counted in `bad`."""
    bad = bad if bad is not None else BadRows()
    for _, item in read_records(path, fmt):
        if isinstance(item, str):
            check_bad(item, skip_bad, bad)
        elif item is not None:
            yield item


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: input file not found" if not path.exists() else f"{path}: is a directory, "
                         "expected a file")
    return path


def _jsonl_doc(line: str) -> InputDoc | str:
    """The document of one JSONL line, or what is wrong with it."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at column {err.colno})"
    if not isinstance(obj, dict):
        return f"expected an object {{\"id\": ..., \"text\": ...}}, found {type(obj).__name__}"
    return _doc_of(obj.get("id"), obj.get("text"))


def _doc_of(doc_id: Any, text: Any) -> InputDoc | str:
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return "no \"id\" (each document needs a non-empty id)"
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return f"\"id\" must be a string or an integer, found {type(doc_id).__name__}"
    if not isinstance(text, str):
        return f"\"text\" must be a string, found {'nothing' if text is None else type(text).__name__}"
    return InputDoc(str(doc_id), text)


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in ("id", "text") if c not in parquet.schema_arrow.names]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)} (found {', '.join(parquet.schema_arrow.names)}); "
                         "the input needs an `id` and a `text` column")
    return parquet


def _parquet_records(path: Path, split: Split) -> Iterator[tuple[int, Item]]:
    parquet = _parquet_file(path)
    record = split.first_record
    for batch in parquet.iter_batches(columns=["id", "text"], batch_size=10_000,
                                      row_groups=range(split.start, split.end)):
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            doc = _doc_of(doc_id, text)
            if isinstance(doc, InputDoc):
                doc.where = f"{path}, row {record + 1}"
            yield record, f"{path}, row {record + 1}: {doc}" if isinstance(doc, str) else doc
            record += 1


def check_bad(message: str, skip_bad: bool, bad: BadRows) -> None:
    """A bad row: an `InputError` with the fix, or (`skip_bad`) counted in `bad`."""
    if not skip_bad:
        raise InputError(f"{message}; fix the row or pass --skip-bad to skip and count such rows")
    bad.n += 1
    if len(bad.examples) < 20:
        bad.examples.append(message)
