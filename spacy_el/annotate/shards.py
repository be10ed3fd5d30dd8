"""The output of `spacy-el annotate`: one Parquet row per entity (`SCHEMA`) in shards
(`part-00000.parquet`, and `part-00000.pubtator` when asked), and `_annotate.json`, the manifest
of the input and shard size. Each shard is written atomically and the Parquet file last, so an
existing Parquet file means a finished shard and every document is written exactly once however
often the job is killed and rerun; a shard file cut short on disk afterwards (its footer does
not read) is written again. A rerun with other settings is refused once a shard is written."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from spacy_el.corpora.documents import BadRows, InputDoc
from spacy_el.io import InputError, atomic_write

MANIFEST = "_annotate.json"

_CANDIDATE = pa.struct([("id", pa.string()), ("name", pa.string()), ("score", pa.float32()),
                        ("source", pa.string())])
#: One row per entity; `name`/`score` are the best candidate's (null when the entity is NIL or unlinked).
SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("label", pa.string()),
    ("text", pa.string()), ("concept_id", pa.string()), ("name", pa.string()), ("score", pa.float32()),
    ("candidates", pa.list_(_CANDIDATE)),
])


@dataclass
class AnnotateStats:
    """What a run did: documents and entities written now, shards skipped as already done."""

    n_docs: int = 0
    n_entities: int = 0
    n_shards_written: int = 0
    n_shards_skipped: int = 0
    bad: BadRows = field(default_factory=BadRows)
    #: finished shards found damaged on disk, written again by this run
    damaged: list[str] = field(default_factory=list)

    @property
    def n_bad_rows(self) -> int:
        return self.bad.n

    @property
    def bad_rows(self) -> list[str]:
        return self.bad.examples


def entity_rows(doc_id: str, doc: Any) -> list[dict[str, Any]]:
    """The rows of one annotated spaCy `Doc` (the records of `spacy_el.linker.link.entity_record`)."""
    from spacy_el.linker.link import entity_record

    rows = []
    for ent in doc.ents:
        rec = entity_record(ent)
        rows.append({"doc_id": doc_id, "start": rec["start"], "end": rec["end"], "label": rec["label"],
                     "text": rec["text"], "concept_id": rec["id"] or None, "name": rec["name"],
                     "score": rec["score"], "candidates": rec["candidates"]})
    return rows


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}"


def _write_shard(output: Path, shard: int, docs: list[InputDoc], rows: list[dict[str, Any]],
                 pubtator: bool) -> None:
    """The shard's PubTator file (if asked), then its Parquet file: each atomic, Parquet last."""
    name = shard_name(shard)
    if pubtator:
        by_doc: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_doc.setdefault(row["doc_id"], []).append(row)
        with atomic_write(output / f"{name}.pubtator") as f:
            for doc in docs:
                f.write(_pubtator_doc(doc, by_doc.get(doc.id, [])))
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"spacy_el.n_docs": str(len(docs)), "spacy_el.shard": str(shard)})
    with atomic_write(output / f"{name}.parquet", "wb") as f:
        pq.write_table(table, f)


def _pubtator_doc(doc: InputDoc, rows: list[dict[str, Any]]) -> str:
    def clean(s: str) -> str:
        return " ".join(s.split())

    if doc.title is not None and doc.text.startswith(doc.title + " "):
        title, abstract = doc.title, doc.text[len(doc.title) + 1:]
    else:
        title, abstract = doc.text, ""
    lines = [f"{doc.id}|t|{clean(title)}", f"{doc.id}|a|{clean(abstract)}"]
    for r in rows:
        lines.append("\t".join([doc.id, str(r["start"]), str(r["end"]), clean(r["text"]), r["label"],
                                r["concept_id"] or "-1"]))
    return "\n".join(lines) + "\n\n"


def finished_shards(output: str | Path, damaged: Optional[list[str]] = None) -> set[int]:
    """Shards whose Parquet file exists and is whole: written atomically, but a copy or a full
    disk can cut it later, so its footer must read and name the shard. Damaged ones are left
    out (a rerun writes them again) and listed in `damaged`."""
    done = set()
    for path in Path(output).glob("part-*.parquet"):
        number = path.stem[len("part-"):]
        if not number.isdigit():
            continue
        try:
            whole = (pq.read_metadata(path).metadata or {}).get(b"spacy_el.shard") == str(int(number)).encode()
        except (pa.ArrowInvalid, OSError):
            whole = False
        if whole:
            done.add(int(number))
        elif damaged is not None:
            damaged.append(str(path))
    return done


def check_manifest(output: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into OUTPUT with another input or shard size (shards would not line up)."""
    path = output / MANIFEST
    if path.exists() and any(output.glob("part-*.parquet")):  # a run that wrote no shard binds nothing
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; delete OUTPUT (or the file, if the shards are yours) "
                             "and rerun") from None
        if old.get("shards_of") != settings["shards_of"]:
            raise InputError(f"{output} holds shards of an older spacy-el, which numbered documents without their "
                             "blank and bad rows, so its shards do not line up with this one's; write to a new OUTPUT")
        for key in ("input", "format", "shard_size", "skip_bad"):
            if old.get(key) != settings[key]:
                raise InputError(f"{output} holds shards of a run with {key}={old.get(key)!r}, not {settings[key]!r}; "
                                 "rerun with the same settings to resume, or write to a new OUTPUT")
    elif any(output.glob("part-*.parquet")):
        raise InputError(f"{output} holds part-*.parquet files but no {MANIFEST}: not a spacy-el annotate output; "
                         "write to a new OUTPUT")
    else:
        with atomic_write(path) as f:
            json.dump(settings, f, indent=2)


def read_entities(output: str | Path) -> pa.Table:
    """Every shard of an annotate OUTPUT as one Arrow table (in shard order). Arrow's own API reads
    it; pandas is not a dependency (`pip install pandas` for `.to_pandas()`). For example::

        import pyarrow.compute as pc
        entities = read_entities("out/")
        rows = entities.to_pylist()                    # one dict per entity
        linked = entities.filter(pc.is_valid(entities["concept_id"]))
        per_concept = linked.group_by("concept_id").aggregate([("doc_id", "count_distinct")])
    """
    paths = sorted(Path(output).glob("part-*.parquet"))
    if not paths:
        return SCHEMA.empty_table()
    return pa.concat_tables(_read_shard(p) for p in paths)


def _read_shard(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a whole Parquet shard ({err}); rerun `spacy-el annotate` with the same "
                         "settings to write it again") from None


def progress(show: bool, unit: str = "doc"):
    from tqdm import tqdm

    return tqdm(disable=not show, unit=unit, desc="annotate", mininterval=2.0)


class ShardWriter:
    """Collects documents and rows per shard; writes a shard once `close_shard` says it is complete."""

    def __init__(self, output: Path, pubtator: bool, stats: AnnotateStats) -> None:
        self.output, self.pubtator, self.stats = output, pubtator, stats
        self.docs: dict[int, list[InputDoc]] = {}
        self.rows: dict[int, list[dict[str, Any]]] = {}

    def add(self, shard: int, doc: InputDoc | None, rows: list[dict[str, Any]]) -> None:
        """A document of `shard` and its rows (None: a record without a document, e.g. a skipped bad row)."""
        docs = self.docs.setdefault(shard, [])
        if doc is not None:
            docs.append(doc)
        self.rows.setdefault(shard, []).extend(rows)

    def close_shard(self, shard: int) -> None:
        docs, rows = self.docs.pop(shard, []), self.rows.pop(shard, [])
        _write_shard(self.output, shard, docs, rows, self.pubtator)
        self.stats.n_docs += len(docs)
        self.stats.n_entities += len(rows)
        self.stats.n_shards_written += 1


