"""Plain documents to annotate: PubTator, JSONL (`{"id": ..., "text": ...}` per line) or Parquet
(`id` and `text` columns), read as a stream. A bad row is an error naming the file and line (or
Parquet row) and the fix, or, with `skip_bad`, is skipped and counted in a `BadRows`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from spacy_el.corpora.pubtator import read_pubtator
from spacy_el.io import InputError, read_lines

FORMATS = ("auto", "pubtator", "jsonl", "parquet")


@dataclass
class InputDoc:
    """One document to annotate; `title` is set for PubTator input (its `|t|` line), so the
    PubTator output can split the text back into title and abstract."""

    id: str
    text: str
    title: Optional[str] = None


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


def read_documents(path: str | Path, fmt: str = "auto", *, skip_bad: bool = False,
                   bad: BadRows | None = None) -> Iterator[InputDoc]:
    """The documents of `path`, in order. A bad row raises an `InputError` naming the file and
    line (or row); with `skip_bad` it is skipped and counted in `bad`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: input file not found")
    bad = bad if bad is not None else BadRows()
    fmt = input_format(path, fmt)
    if fmt == "pubtator":
        for doc in read_pubtator(path).docs:
            yield InputDoc(doc.pmid, doc.text, doc.title)
    elif fmt == "jsonl":
        for lineno, line in read_lines(path):
            if not line.strip():
                continue
            doc = _jsonl_doc(line)
            if isinstance(doc, str):
                _bad(f"{path}, line {lineno}: {doc}", skip_bad, bad)
            else:
                yield doc
    else:
        yield from _parquet_docs(path, skip_bad, bad)


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


def _parquet_docs(path: Path, skip_bad: bool, bad: BadRows) -> Iterator[InputDoc]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in ("id", "text") if c not in parquet.schema_arrow.names]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)} (found {', '.join(parquet.schema_arrow.names)}); "
                         "the input needs an `id` and a `text` column")
    row = 0
    for batch in parquet.iter_batches(columns=["id", "text"], batch_size=10_000):
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            row += 1
            doc = _doc_of(doc_id, text)
            if isinstance(doc, str):
                _bad(f"{path}, row {row}: {doc}", skip_bad, bad)
            else:
                yield doc


def _bad(message: str, skip_bad: bool, bad: BadRows) -> None:
    if not skip_bad:
        raise InputError(f"{message}; fix the row or pass --skip-bad to skip and count such rows")
    bad.n += 1
    if len(bad.examples) < 20:
        bad.examples.append(message)
