"""`annotate`: the job of `spacy-el annotate` (see the package docstring): check the input and
the output, skip finished shards, and run the engine asked for."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional

from spacy_el.annotate.local import pending_records, run_local
from spacy_el.annotate.ray_engine import run_ray
from spacy_el.annotate.shards import AnnotateStats, check_manifest, finished_shards
from spacy_el.corpora.documents import input_format, plan_splits, read_records
from spacy_el.io import InputError

ENGINES = ("local", "ray")


def annotate(pipeline: str | Path, input_path: str | Path, output: str | Path, *, fmt: str = "auto",
             engine: str = "local", n_process: int = 1, batch_size: int = 64, shard_size: int = 1000,
             workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
             address: Optional[str] = None, pubtator: bool = False, skip_bad: bool = False,
             show_progress: bool = True, split_bytes: int = 32 << 20) -> AnnotateStats:
    """Annotate `input_path` with the pipeline at `pipeline` (a directory or package name) into
    Parquet shards under `output` (see the package docstring). Finished shards are skipped.
    `split_bytes`: the Ray engine's read tasks each parse about that much of a text input."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: use local or ray")
    if shard_size < 1 or batch_size < 1 or n_process < 1 or workers < 1:
        raise InputError("--shard-size, --batch-size, --n-process and --workers must be at least 1")
    input_path, output = Path(input_path), Path(output)
    if not input_path.is_file():
        raise InputError(f"{input_path}: input file not found")
    if input_path.stat().st_size == 0:
        return AnnotateStats()
    fmt = input_format(input_path, fmt)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; give a directory for OUTPUT (the Parquet shards go there)")
    output.mkdir(parents=True, exist_ok=True)
    check_manifest(output, {"input": str(input_path.resolve()), "format": fmt, "shard_size": shard_size,
                            "skip_bad": skip_bad, "pipeline": str(pipeline), "shards_of": "records"})
    stats = AnnotateStats()
    done = finished_shards(output, stats.damaged)
    if engine == "local":
        pending = pending_records(read_records(input_path, fmt), shard_size, done, stats)
        first = next(pending, None)
        if first is None:  # every shard is done: nothing to load or run
            return stats
        run_local(pipeline, itertools.chain([first], pending), output, stats, n_process=n_process,
                  batch_size=batch_size, skip_bad=skip_bad, pubtator=pubtator, show_progress=show_progress)
    else:
        run_ray(pipeline, plan_splits(input_path, fmt, split_bytes), output, stats, shard_size=shard_size, done=done,
                skip_bad=skip_bad, batch_size=batch_size, workers=workers, cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker, address=address, pubtator=pubtator, show_progress=show_progress)
    return stats
