"""Corpus annotation: run a saved pipeline (NER + `sap_linker`) over a corpus and write one
Parquet row per entity, in shards that make a killed job resumable.

Documents come from PubTator, JSONL (`{"id": ..., "text": ...}` per line) or Parquet (`id` and
`text` columns), read by `spacy_el.corpora.documents` as numbered records (a JSONL line, a
PubTator document, a Parquet row), and shard `i` holds the records `i·shard_size …
(i+1)·shard_size − 1`: the shard a document belongs to depends only on the input, never on the
engine or on what was skipped, so a rerun recomputes exactly the shards whose file is missing
(`shards`: the output, its shards and their manifest).

Two engines run the pipeline: `local` (`nlp.pipe` in this process, `local`) and `ray` (Ray Data
over an actor pool, `ray_engine`). `annotate` is the job; `read_entities` reads its output back.
"""
from spacy_el.annotate.job import ENGINES, annotate
from spacy_el.annotate.shards import SCHEMA, AnnotateStats, entity_rows, finished_shards, read_entities

__all__ = ["ENGINES", "SCHEMA", "AnnotateStats", "annotate", "entity_rows", "finished_shards", "read_entities"]
