"""The Ray engine of `spacy-el annotate`. Ray Data reads the input: the driver only plans it
(`plan_splits`: one scan for record starts, no parsing); `read_datasource` gives each split to a
read task, which parses it and reports a bad row with its file and line, as the local engine does.
`map_batches` runs the documents through an actor pool, one `spacy.load`ed pipeline per actor, and
only entities come back to the driver, which writes each shard once all its records are back.
`ray` is imported only here, on use (`pip install spacy-el[ray]`). On a cluster, the pipeline and
the input must be readable at the same path on every node (an installed pipeline package, a
shared file system)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from spacy_el.annotate.shards import AnnotateStats, ShardWriter, entity_rows, progress
from spacy_el.corpora.documents import BadRows, InputDoc, Split, check_bad, read_split, too_long
from spacy_el.io import InputError


class RayAnnotator:
    """The `map_batches` callable class of the Ray engine: one pipeline per actor, loaded once.
    A batch of records in (Arrow), one row per record out with its entities as JSON (null for a
    record without a document), so the driver can tell when every record of a shard is back."""

    def __init__(self, pipeline: str, batch_size: int, threads: int, keep_text: bool, skip_bad: bool = False) -> None:
        import spacy

        from spacy_el.models import one_thread_per_worker

        self.nlp = spacy.load(pipeline)
        if threads <= 1:  # actors share the machine's cores: one thread each, as nlp.pipe's workers
            one_thread_per_worker()
        self.batch_size, self.keep_text, self.skip_bad = batch_size, keep_text, skip_bad

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


def run_ray(pipeline: str | Path, splits: list[Split], output: Path, stats: AnnotateStats, *, shard_size: int,
             done: set[int], skip_bad: bool, batch_size: int, workers: int, cpus_per_worker: float,
             gpus_per_worker: float, address: Optional[str], pubtator: bool, show_progress: bool) -> None:
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
    dataset = ray.data.read_datasource(_document_source(todo, shard_size, frozenset(done), skip_bad), num_cpus=0,
                                       concurrency=max(1, workers))
    results = dataset.map_batches(
        RayAnnotator, fn_constructor_kwargs={"pipeline": pipeline, "batch_size": batch_size,
                                             "threads": max(1, int(cpus_per_worker)), "keep_text": pubtator,
                                             "skip_bad": skip_bad},
        batch_size=batch_size, concurrency=workers, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
        batch_format="pyarrow")
    writer = ShardWriter(output, pubtator, stats)
    got: dict[int, dict[int, dict[str, Any]]] = {}
    with progress(show_progress) as bar:
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
