"""Corpus annotation: run a saved pipeline (NER + `sap_linker`) over a corpus and write one
Parquet row per entity, in shards that make a killed job resumable.

Documents come from PubTator, JSONL (`{"id": ..., "text": ...}` per line) or Parquet (`id` and
`text` columns), read by `spacy_el.corpora.documents` as numbered records (a JSONL line, a
PubTator document, a Parquet row), and shard `i` holds the records `i·shard_size …
(i+1)·shard_size − 1`: the shard a document belongs to depends only on the input, never on the
engine or on what was skipped, so a rerun recomputes exactly the shards whose file is missing.
Each shard (`part-00000.parquet`, and `part-00000.pubtator` when asked) is written atomically
and the Parquet file last, so an existing Parquet file means a finished shard and every
document is written exactly once however often the job is killed and rerun; a shard file cut
short on disk afterwards (its footer does not read) is written again. `_annotate.json` records
the input and shard size; a rerun with other settings is refused once a shard is written.

Two engines run the pipeline:
- `local`: `nlp.pipe` in this process (`n_process` > 1 forks spaCy's workers);
- `ray`: Ray Data reads the input. The driver only plans it (`plan_splits`: one scan for record
  starts, no parsing); `read_datasource` gives each split to a read task, which parses it and
  reports a bad row with its file and line, as the local engine does. `map_batches` runs the
  documents through an actor pool, one `spacy.load`ed pipeline per actor, and only entities come
  back to the driver, which writes each shard once all its records are back. With several
  actors, one more actor holds a mention cache they share (`SharedMentions`): each actor's
  `sap_linker` asks it, once per batch, for the mentions it has not seen, so a mention is embedded
  and searched once per job rather than once per actor. `ray` is imported
  only here, on use (`pip install spacy-el[ray]`). On a cluster, the pipeline and the input must
  be readable at the same path on every node (an installed pipeline package, a shared file
  system).
"""
from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from spacy_el.corpora.documents import (BadRows, InputDoc, Item, Split, check_bad, input_format, plan_splits,
                                        read_records, read_split, too_long)
from spacy_el.io import InputError, atomic_write

MANIFEST = "_annotate.json"
ENGINES = ("local", "ray")
#: Entries of the Ray actors' shared mention cache (a vector and candidates each, ~2.5 KB at dim 384).
SHARED_CACHE_SIZE = 100_000

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


# ---------------------------------------------------------------------- records and shards
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


def _check_manifest(output: Path, settings: dict[str, Any]) -> None:
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


# ---------------------------------------------------------------------- the job
def annotate(pipeline: str | Path, input_path: str | Path, output: str | Path, *, fmt: str = "auto",
             engine: str = "local", n_process: int = 1, batch_size: int = 64, shard_size: int = 1000,
             workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
             address: Optional[str] = None, pubtator: bool = False, skip_bad: bool = False,
             show_progress: bool = True, split_bytes: int = 32 << 20,
             shared_cache: int = SHARED_CACHE_SIZE) -> AnnotateStats:
    """Annotate `input_path` with the pipeline at `pipeline` (a directory or package name) into
    Parquet shards under `output` (see the module docstring). Finished shards are skipped.
    `split_bytes`: the Ray engine's read tasks each parse about that much of a text input.
    `shared_cache`: entries of the mention cache the Ray actors share when there are several (0: none)."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: use local or ray")
    if shard_size < 1 or batch_size < 1 or n_process < 1 or workers < 1:
        raise InputError("--shard-size, --batch-size, --n-process and --workers must be at least 1")
    if shared_cache < 0:
        raise InputError(f"--shared-cache {shared_cache}: give a number of entries, or 0 for none")
    input_path, output = Path(input_path), Path(output)
    if not input_path.is_file():
        raise InputError(f"{input_path}: input file not found")
    if input_path.stat().st_size == 0:
        return AnnotateStats()
    fmt = input_format(input_path, fmt)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; give a directory for OUTPUT (the Parquet shards go there)")
    output.mkdir(parents=True, exist_ok=True)
    _check_manifest(output, {"input": str(input_path.resolve()), "format": fmt, "shard_size": shard_size,
                             "skip_bad": skip_bad, "pipeline": str(pipeline), "shards_of": "records"})
    stats = AnnotateStats()
    done = finished_shards(output, stats.damaged)
    if engine == "local":
        pending = _pending(read_records(input_path, fmt), shard_size, done, stats)
        first = next(pending, None)
        if first is None:  # every shard is done: nothing to load or run
            return stats
        _run_local(pipeline, itertools.chain([first], pending), output, stats, n_process=n_process,
                   batch_size=batch_size, skip_bad=skip_bad, pubtator=pubtator, show_progress=show_progress)
    else:
        _run_ray(pipeline, plan_splits(input_path, fmt, split_bytes), output, stats, shard_size=shard_size, done=done,
                 skip_bad=skip_bad, batch_size=batch_size, workers=workers, cpus_per_worker=cpus_per_worker,
                 gpus_per_worker=gpus_per_worker, address=address, pubtator=pubtator, show_progress=show_progress,
                 shared_cache=shared_cache if workers > 1 else 0)
    return stats


def _pending(records: Iterable[tuple[int, Item]], shard_size: int, done: set[int], stats: AnnotateStats
             ) -> Iterator[tuple[int, Item]]:
    """(shard, item) for the records of unfinished shards; counts the skipped shards."""
    skipped: set[int] = set()
    for record, item in records:
        shard = record // shard_size
        if shard in done:
            skipped.add(shard)
        else:
            yield shard, item
    stats.n_shards_skipped = len(skipped)


def _progress(show: bool, unit: str = "doc"):
    from tqdm import tqdm

    return tqdm(disable=not show, unit=unit, desc="annotate", mininterval=2.0)


class _ShardWriter:
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


def _run_local(pipeline: str | Path, pending: Iterator[tuple[int, Item]], output: Path,
               stats: AnnotateStats, *, n_process: int, batch_size: int, skip_bad: bool, pubtator: bool,
               show_progress: bool) -> None:
    import spacy

    nlp = spacy.load(pipeline)
    writer = _ShardWriter(output, pubtator, stats)
    seen: list[int] = []  # shards in input order, as the reader reaches them (ahead of nlp.pipe)

    def documents() -> Iterator[tuple[str, tuple[int, InputDoc]]]:
        for shard, item in pending:
            if not seen or seen[-1] != shard:
                seen.append(shard)
            if isinstance(item, str):
                check_bad(item, skip_bad, stats.bad)
            elif item is not None and (problem := too_long(item, nlp.max_length)):
                check_bad(problem, skip_bad, stats.bad)
            elif item is not None:
                yield item.text, (shard, item)

    def close_before(shard: Optional[int]) -> None:
        """nlp.pipe keeps the order: every shard before `shard` is complete (even one without documents)."""
        while seen and (shard is None or seen[0] < shard):
            writer.close_shard(seen.pop(0))

    with _progress(show_progress) as bar:
        for sdoc, (shard, doc) in nlp.pipe(documents(), as_tuples=True, n_process=n_process, batch_size=batch_size):
            close_before(shard)
            writer.add(shard, doc, entity_rows(doc.id, sdoc))
            bar.update(1)
        close_before(None)


class SharedMentions:
    """The mention cache the Ray actors share (`spacy_el.linker.search.SharedCache`), held by one
    Ray actor: input → (vector, candidates per (k, type filter)), least recently used dropped
    first. Every actor runs the same pipeline, so one actor's search is valid for all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[Any, dict[tuple, Any]]] = OrderedDict()

    def get(self, keys: list[str], tag: tuple) -> dict[str, tuple[Any, Any]]:
        found = {}
        for key in keys:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                found[key] = (entry[0], entry[1].get(tag))
        return found

    def put(self, entries: dict[str, tuple[Any, Any]], tag: tuple) -> None:
        for key, (vector, cands) in entries.items():
            self.entries.setdefault(key, (vector, {}))[1][tag] = cands
            self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self.entries)


class _RemoteMentions:
    """An actor's view of the `SharedMentions` actor: a blocking `get` (one call per batch),
    a `put` that does not wait (Ray runs one caller's calls in order)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def get(self, keys: list[str], tag: tuple) -> dict[str, tuple[Any, Any]]:
        import ray

        return ray.get(self.handle.get.remote(keys, tag))

    def put(self, entries: dict[str, tuple[Any, Any]], tag: tuple) -> None:
        self.handle.put.remote(entries, tag)


class RayAnnotator:
    """The `map_batches` callable class of the Ray engine: one pipeline per actor, loaded once.
    A batch of records in (Arrow), one row per record out with its entities as JSON (null for a
    record without a document), so the driver can tell when every record of a shard is back.
    `shared`: the `SharedMentions` actor every `sap_linker` of this pipeline consults, or None."""

    def __init__(self, pipeline: str, batch_size: int, threads: int, keep_text: bool, shared: Any = None,
                 skip_bad: bool = False) -> None:
        import spacy

        from spacy_el.linker.pipe import SapEntityLinker
        from spacy_el.models import one_thread_per_worker

        self.nlp = spacy.load(pipeline)
        if threads <= 1:  # actors share the machine's cores: one thread each, as nlp.pipe's workers
            one_thread_per_worker()
        self.batch_size, self.keep_text, self.skip_bad = batch_size, keep_text, skip_bad
        if shared is not None:
            for _, pipe in self.nlp.pipeline:
                if isinstance(pipe, SapEntityLinker):
                    pipe.shared_cache = _RemoteMentions(shared)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, texts, bad = (batch.column(name).to_pylist() for name in ("id", "text", "bad"))
        for k, where in enumerate(batch.column("where").to_pylist()):  # too long for spaCy: a bad row
            if ids[k] is not None and (problem := too_long(InputDoc(ids[k], texts[k], where=where),
                                                           self.nlp.max_length)):
                check_bad(problem, self.skip_bad, BadRows())
                ids[k], bad[k] = None, problem
        is_doc = [i is not None for i in ids]
        docs = iter(self.nlp.pipe([t for t, ok in zip(texts, is_doc) if ok], batch_size=self.batch_size))
        entities = [json.dumps(entity_rows(i, next(docs))) if ok else None for i, ok in zip(ids, is_doc)]
        columns = {"shard": batch.column("shard"), "record": batch.column("record"), "id": pa.array(ids, pa.string()),
                   "bad": pa.array(bad, pa.string()), "entities": pa.array(entities, pa.string())}
        if self.keep_text:
            columns |= {"text": batch.column("text"), "title": batch.column("title")}
        return pa.table(columns)


_RECORDS = pa.schema([("shard", pa.int64()), ("record", pa.int64()), ("id", pa.string()), ("text", pa.string()),
                      ("title", pa.string()), ("bad", pa.string()), ("where", pa.string())])


def read_split_table(split: Split, shard_size: int, done: frozenset[int], skip_bad: bool) -> pa.Table:
    """A Ray read task: the records of `split` in unfinished shards as an Arrow table (`_RECORDS`);
    a bad row stops the job with its file and line, or (`skip_bad`) comes back as its message."""
    rows: dict[str, list] = {name: [] for name in _RECORDS.names}
    for record, item in read_split(split):
        shard = record // shard_size
        if shard in done:
            continue
        if isinstance(item, str):
            check_bad(item, skip_bad, BadRows())
        doc = item if isinstance(item, InputDoc) else None
        for name, value in (("shard", shard), ("record", record), ("id", doc and doc.id), ("text", doc and doc.text),
                            ("title", doc and doc.title), ("bad", item if isinstance(item, str) else None),
                            ("where", doc and doc.where)):
            rows[name].append(value)
    return pa.table(rows, schema=_RECORDS)


def _document_source(splits: list[Split], shard_size: int, done: frozenset[int], skip_bad: bool):
    """A Ray Data `Datasource` with one read task per split (`read_split_table`)."""
    import functools
    import inspect

    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    def metadata(split: Split) -> BlockMetadata:
        size = split.end - split.start if split.fmt != "parquet" else None
        fields = {"num_rows": split.n_records, "size_bytes": size, "exec_stats": None, "input_files": [split.path]}
        if "schema" in inspect.signature(BlockMetadata).parameters:  # Ray < 2.44 kept the schema here
            fields["schema"] = _RECORDS
        return BlockMetadata(**fields)

    def read(split: Split) -> list[pa.Table]:
        return [read_split_table(split, shard_size, done, skip_bad)]

    class DocumentSource(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return None if any(s.fmt == "parquet" for s in splits) else sum(s.end - s.start for s in splits)

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[ReadTask]:
            return [ReadTask(functools.partial(read, split), metadata(split)) for split in splits]

    return DocumentSource()


def _run_ray(pipeline: str | Path, splits: list[Split], output: Path, stats: AnnotateStats, *, shard_size: int,
             done: set[int], skip_bad: bool, batch_size: int, workers: int, cpus_per_worker: float,
             gpus_per_worker: float, address: Optional[str], pubtator: bool, show_progress: bool,
             shared_cache: int) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'spacy-el[ray]' (or 'ray[data]')") from None
    n_records = sum(s.n_records for s in splits)
    n_shards = -(-n_records // shard_size)
    expected = {shard: min((shard + 1) * shard_size, n_records) - shard * shard_size
                for shard in range(n_shards) if shard not in done}
    stats.n_shards_skipped = n_shards - len(expected)
    todo = [s for s in splits if s.n_records and any(
        shard in expected for shard in range(s.first_record // shard_size,
                                             (s.first_record + s.n_records - 1) // shard_size + 1))]
    if not expected:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    pipeline = str(Path(pipeline).resolve()) if Path(pipeline).exists() else str(pipeline)
    # read tasks reserve no CPU: the actors may hold every CPU (2 workers on 2 cores), and a read
    # task that waits for one would wait forever; at most `workers` of them run at once
    shared = ray.remote(num_cpus=0)(SharedMentions).remote(shared_cache) if shared_cache else None
    dataset = ray.data.read_datasource(_document_source(todo, shard_size, frozenset(done), skip_bad), num_cpus=0,
                                       concurrency=max(1, workers))
    results = dataset.map_batches(
        RayAnnotator, fn_constructor_kwargs={"pipeline": pipeline, "batch_size": batch_size,
                                             "threads": max(1, int(cpus_per_worker)), "keep_text": pubtator,
                                             "shared": shared, "skip_bad": skip_bad},
        batch_size=batch_size, concurrency=workers, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
        batch_format="pyarrow")
    writer = _ShardWriter(output, pubtator, stats)
    got: dict[int, dict[int, dict[str, Any]]] = {}
    with _progress(show_progress) as bar:
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    shard = row["shard"]
                    got.setdefault(shard, {})[row["record"]] = row
                    bar.update(1)
                    if len(got[shard]) == expected[shard]:  # every record of the shard is back: write it, in order
                        for _, r in sorted(got.pop(shard).items()):
                            if r["bad"] is not None:
                                check_bad(r["bad"], True, stats.bad)
                            doc = InputDoc(r["id"], r.get("text") or "", r.get("title")) if r["id"] is not None else None
                            writer.add(shard, doc, json.loads(r["entities"]) if doc is not None else [])
                        writer.close_shard(shard)
        except Exception as err:  # a read task's InputError (a bad row) arrives wrapped by Ray: give its message
            cause = _input_error(err)
            if cause is None:
                raise
            raise InputError(str(cause.args[0]) if cause.args else str(cause)) from None
    if got:  # pragma: no cover - Ray returns every row or raises
        raise RuntimeError(f"Ray returned incomplete shards {sorted(got)}; rerun to finish them")


def _input_error(err: BaseException) -> Optional[InputError]:
    """The `InputError` a Ray task raised, inside the exceptions Ray wraps it in."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None)  # RayTaskError: the exception the task raised
        if isinstance(inner, BaseException):
            err = inner
            continue
        if isinstance(err, InputError):
            return err
        err = err.__cause__ or err.__context__
    return None
