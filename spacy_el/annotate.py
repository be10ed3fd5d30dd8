"""Corpus annotation: run a saved pipeline (NER + `sap_linker`) over a corpus and write one
Parquet row per entity, in shards that make a killed job resumable.

Documents come from PubTator, JSONL (`{"id": ..., "text": ...}` per line) or Parquet (`id` and
`text` columns), read by `spacy_el.corpora.documents`. They are numbered in input order (bad
rows skipped with `skip_bad` do not get a number), and shard `i` holds the documents `i·shard_size … (i+1)·shard_size − 1`: the shard a
document belongs to depends only on the input, so a rerun recomputes exactly the shards whose
file is missing. Each shard (`part-00000.parquet`, and `part-00000.pubtator` when asked) is
written atomically and the Parquet file last, so an existing Parquet file means a finished shard
and every document is written exactly once however often the job is killed and rerun.
`_annotate.json` records the input and shard size; a rerun with other settings is refused.

Two engines run the pipeline:
- `local`: `nlp.pipe` in this process (`n_process` > 1 forks spaCy's workers);
- `ray`: Ray Data. The driver reads the input (so bad rows are reported with file and line, as
  the local engine does) and hands the pending documents to `ray.data.from_items`;
  `map_batches` runs them through an actor pool, one `spacy.load`ed pipeline per actor. The
  driver writes each shard once all its documents are back. `ray` is imported only here, on use
  (`pip install spacy-el[ray]`). On a cluster, the pipeline path must exist on every node
  (an installed pipeline package or a shared file system); split very large inputs into files
  of a few million documents, since the driver holds the pending texts of one run.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from spacy_el.corpora.documents import BadRows, InputDoc, input_format, read_documents
from spacy_el.io import InputError, atomic_write

MANIFEST = "_annotate.json"
ENGINES = ("local", "ray")

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


def finished_shards(output: str | Path) -> set[int]:
    """Shards whose Parquet file exists (written atomically, so complete)."""
    done = set()
    for path in Path(output).glob("part-*.parquet"):
        number = path.stem[len("part-"):]
        if number.isdigit():
            done.add(int(number))
    return done


def _check_manifest(output: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into OUTPUT with another input or shard size (shards would not line up)."""
    path = output / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; delete OUTPUT (or the file, if the shards are yours) "
                             "and rerun") from None
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
    """Every shard of an annotate OUTPUT as one Arrow table (in shard order)."""
    paths = sorted(Path(output).glob("part-*.parquet"))
    if not paths:
        return SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(p) for p in paths)


# ---------------------------------------------------------------------- the job
def annotate(pipeline: str | Path, input_path: str | Path, output: str | Path, *, fmt: str = "auto",
             engine: str = "local", n_process: int = 1, batch_size: int = 64, shard_size: int = 1000,
             workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
             address: Optional[str] = None, pubtator: bool = False, skip_bad: bool = False,
             show_progress: bool = True) -> AnnotateStats:
    """Annotate `input_path` with the pipeline at `pipeline` (a directory or package name) into
    Parquet shards under `output` (see the module docstring). Finished shards are skipped."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: use local or ray")
    if shard_size < 1 or batch_size < 1 or n_process < 1 or workers < 1:
        raise InputError("--shard-size, --batch-size, --n-process and --workers must be at least 1")
    input_path, output = Path(input_path), Path(output)
    if not input_path.is_file():
        raise InputError(f"{input_path}: input file not found")
    fmt = input_format(input_path, fmt)
    output.mkdir(parents=True, exist_ok=True)
    _check_manifest(output, {"input": str(input_path.resolve()), "format": fmt, "shard_size": shard_size,
                             "skip_bad": skip_bad, "pipeline": str(pipeline)})
    stats = AnnotateStats()
    done = finished_shards(output)
    pending = _pending(read_documents(input_path, fmt, skip_bad=skip_bad, bad=stats.bad), shard_size, done, stats)
    first = next(pending, None)
    if first is None:  # every shard is done (or the input is empty): nothing to load or run
        return stats
    pending = itertools.chain([first], pending)
    if engine == "local":
        _run_local(pipeline, pending, output, stats, n_process=n_process, batch_size=batch_size,
                   pubtator=pubtator, show_progress=show_progress)
    else:
        _run_ray(pipeline, pending, output, stats, batch_size=batch_size, workers=workers,
                 cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, address=address,
                 pubtator=pubtator, show_progress=show_progress)
    return stats


def _pending(docs: Iterable[InputDoc], shard_size: int, done: set[int], stats: AnnotateStats
             ) -> Iterator[tuple[int, InputDoc]]:
    """(shard, doc) for the documents of unfinished shards; counts the skipped shards."""
    skipped: set[int] = set()
    for position, doc in enumerate(docs):
        shard = position // shard_size
        if shard in done:
            skipped.add(shard)
        else:
            yield shard, doc
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

    def add(self, shard: int, doc: InputDoc, rows: list[dict[str, Any]]) -> None:
        self.docs.setdefault(shard, []).append(doc)
        self.rows.setdefault(shard, []).extend(rows)

    def close_shard(self, shard: int) -> None:
        docs, rows = self.docs.pop(shard, []), self.rows.pop(shard, [])
        _write_shard(self.output, shard, docs, rows, self.pubtator)
        self.stats.n_docs += len(docs)
        self.stats.n_entities += len(rows)
        self.stats.n_shards_written += 1


def _run_local(pipeline: str | Path, pending: Iterator[tuple[int, InputDoc]], output: Path,
               stats: AnnotateStats, *, n_process: int, batch_size: int, pubtator: bool,
               show_progress: bool) -> None:
    import spacy

    nlp = spacy.load(pipeline)
    writer = _ShardWriter(output, pubtator, stats)
    current: Optional[int] = None
    stream = ((doc.text, (shard, doc)) for shard, doc in pending)
    with _progress(show_progress) as bar:
        for sdoc, (shard, doc) in nlp.pipe(stream, as_tuples=True, n_process=n_process, batch_size=batch_size):
            if current is not None and shard != current:  # nlp.pipe keeps the order: the last shard is complete
                writer.close_shard(current)
            current = shard
            writer.add(shard, doc, entity_rows(doc.id, sdoc))
            bar.update(1)
        if current is not None:
            writer.close_shard(current)


class RayAnnotator:
    """The `map_batches` callable class of the Ray engine: one pipeline per actor, loaded once.
    A batch of documents in, one row per document out (its entities as JSON, so the driver can
    tell when every document of a shard has come back)."""

    def __init__(self, pipeline: str, batch_size: int, threads: int) -> None:
        import spacy

        from spacy_el.models import one_thread_per_worker

        self.nlp = spacy.load(pipeline)
        if threads <= 1:  # actors share the machine's cores: one thread each, as nlp.pipe's workers
            one_thread_per_worker()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids = [str(i) for i in batch["id"]]
        docs = self.nlp.pipe([str(t) for t in batch["text"]], batch_size=self.batch_size)
        entities = [json.dumps(entity_rows(doc_id, doc)) for doc_id, doc in zip(ids, docs)]
        return {"shard": list(batch["shard"]), "pos": list(batch["pos"]), "entities": entities}


def _run_ray(pipeline: str | Path, pending: Iterator[tuple[int, InputDoc]], output: Path,
             stats: AnnotateStats, *, batch_size: int, workers: int, cpus_per_worker: float,
             gpus_per_worker: float, address: Optional[str], pubtator: bool, show_progress: bool) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'spacy-el[ray]' (or 'ray[data]')") from None
    items, docs, expected = [], {}, {}
    for shard, doc in pending:
        pos = len(items)
        items.append({"shard": shard, "pos": pos, "id": doc.id, "text": doc.text})
        docs[pos] = (shard, doc)
        expected[shard] = expected.get(shard, 0) + 1
    if not items:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    pipeline = str(Path(pipeline).resolve()) if Path(pipeline).exists() else str(pipeline)
    blocks = max(workers * 4, min(len(items) // max(batch_size, 1), 200), 1)
    dataset = ray.data.from_items(items, override_num_blocks=min(blocks, len(items)))
    results = dataset.map_batches(
        RayAnnotator, fn_constructor_kwargs={"pipeline": pipeline, "batch_size": batch_size,
                                             "threads": max(1, int(cpus_per_worker))},
        batch_size=batch_size, concurrency=workers, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
        batch_format="numpy")
    writer = _ShardWriter(output, pubtator, stats)
    got: dict[int, dict[int, list[dict[str, Any]]]] = {}
    with _progress(show_progress) as bar:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for shard, pos, ents in zip(batch["shard"].tolist(), batch["pos"].tolist(), batch["entities"].tolist()):
                got.setdefault(shard, {})[pos] = json.loads(ents)
                bar.update(1)
                if len(got[shard]) == expected[shard]:  # every document of the shard is back: write it, in order
                    for p, rows in sorted(got.pop(shard).items()):
                        writer.add(shard, docs.pop(p)[1], rows)
                    writer.close_shard(shard)
    if got:  # pragma: no cover - Ray returns every row or raises
        raise RuntimeError(f"Ray returned incomplete shards {sorted(got)}; rerun to finish them")
