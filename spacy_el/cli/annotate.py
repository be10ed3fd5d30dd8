"""Corpus annotation command: `annotate` (local `nlp.pipe` or a Ray Data actor pool)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.io import InputError


@app.command("annotate")
def annotate_command(
    pipeline: str = typer.Argument(..., help="Pipeline: directory or installed package (NER + sap_linker)"),
    input_path: Path = typer.Argument(..., help="Documents: PubTator, JSONL ({\"id\", \"text\"} per line) or Parquet"),
    output: Path = typer.Argument(..., help="Output directory of Parquet shards (one row per entity)"),
    fmt: str = typer.Option("auto", "--format", help="Input format: auto (by file name), pubtator, jsonl, parquet"),
    engine: str = typer.Option("local", "--engine", help="local (nlp.pipe) or ray (Ray Data actor pool)"),
    n_process: int = typer.Option(1, "--n-process", help="local: processes of nlp.pipe"),
    workers: int = typer.Option(1, "--workers", help="ray: actors, each holding one loaded pipeline"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="ray: CPUs reserved per actor"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="ray: GPUs reserved per actor"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: cluster address (default: start a local Ray)"),
    batch_size: int = typer.Option(64, "--batch-size", help="Documents per nlp.pipe / map_batches batch"),
    shard_size: int = typer.Option(1000, "--shard-size", help="Documents per output shard (fixed for a resumed run)"),
    pubtator: bool = typer.Option(False, "--pubtator", help="Also write each shard as PubTator"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad input rows instead of stopping"),
) -> None:
    """Annotate a corpus: entities and their concepts as Parquet shards; a rerun resumes."""
    from spacy_el.annotate import annotate

    try:
        stats = annotate(pipeline, input_path, output, fmt=fmt, engine=engine, n_process=n_process,
                         batch_size=batch_size, shard_size=shard_size, workers=workers,
                         cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, address=address,
                         pubtator=pubtator, skip_bad=skip_bad)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Annotated {stats.n_docs} documents ({stats.n_entities} entities) into {stats.n_shards_written} "
               f"shards; {stats.n_shards_skipped} shards already done → {output}")
    if stats.damaged:
        typer.echo(f"Wrote again {len(stats.damaged)} shards found damaged on disk: {', '.join(stats.damaged[:5])}",
                   err=True)
    if stats.n_bad_rows:
        typer.echo(f"Skipped {stats.n_bad_rows} bad input rows, e.g. {stats.bad_rows[0]}", err=True)
