"""Building a concept index from a KB file, an encoder and annotated corpora: the job above
both `kb/` (tables, readers, the index) and `sap/` (encoders). Corpus mentions become aliases of
their gold concepts; corpus concept counts become the index's prior.

It also holds the registered loaders `sap_linker.initialize` takes (spaCy's `kb_loader`
pattern), declared as `spacy_misc` entry points so a config can name them after `pip install`:

```ini
[initialize.components.sap_linker.encoder_loader]
@misc = "spacy_el.EncoderFromPath.v1"
path = "encoder/"

[initialize.components.sap_linker.index_loader]
@misc = "spacy_el.IndexFromDir.v1"      # or spacy_el.IndexFromKB.v1: build it from a KB file
path = "index/"
```
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from spacy.util import registry

from spacy_el.corpora.pubtator import mention_aliases, mention_concept_counts, read_pubtator
from spacy_el.io import InputError
from spacy_el.kb.files import encoder_meta
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.merge import MergeStats, merge_by_xrefs, read_merge_kb
from spacy_el.kb.readers import read_kb
from spacy_el.kb.streaming import build_index_from_chunks
from spacy_el.kb.table import ConceptTable
from spacy_el.models import Encoder
from spacy_el.sap.encoders import encoder_from_path, load_encoder

#: A loader of `sap_linker`'s index: given the pipeline's encoder, the concept index.
IndexLoader = Callable[[Encoder], ConceptIndex]

#: Rows of a KB to index in a stream: (concept id, name, source).
Rows = Iterable[tuple[str, str, str]]

__all__ = ["build_index", "build_index_streaming", "enrich_table", "mention_alias_table", "corpus_prior", "index_from_dir", "index_from_kb",
           "encoder_from_path", "IndexLoader"]


def build_index(kb: str | Path, encoder: Encoder | str | Path, output: str | Path, *, kb_format: str = "tsv",
                index_type: str = "Flat", add_mentions: Iterable[str | Path] = (),
                mention_types: Iterable[str] | None = None, prior_from: Iterable[str | Path] = (),
                prior_weight: float | None = None, nprobe: int | None = None, ef_search: int | None = None,
                refine_k_factor: int | None = None, batch_size: int = 256, use_gpu: bool | str = "auto",
                show_progress: bool = False, merge: Iterable[str | Path] = (),
                merge_format: str = "obo-xrefs", store_vectors: bool = False) -> ConceptIndex:
    """KB file (+ names of `merge` KBs joined through cross-references, + annotated corpora whose
    mentions become aliases, + corpora whose concept counts become the prior) → index directory
    `output`. `encoder` is an encoder or its path. Nothing is written unless the whole build
    succeeds; the merge counts are recorded in `meta.json` (`build.merge`)."""
    prior_from = list(prior_from)
    if prior_weight is not None and not prior_from:
        raise InputError(f"prior_weight={prior_weight} without a corpus to count: give --prior-from TRAIN.PubTator "
                         "(the prior weighs that corpus's concept counts), or drop --prior-weight")
    if not isinstance(encoder, Encoder):
        encoder = load_encoder(encoder)
    table = read_kb(kb, kb_format)
    if not len(table):
        raise InputError(f"{kb}: no concept names read (format {kb_format!r}); check the file and --format")
    table, merged = enrich_table(table, merge, merge_format)
    index = ConceptIndex.build(table, encoder, index_type, extra=mention_alias_table(add_mentions, mention_types),
                               nprobe=nprobe, ef_search=ef_search, refine_k_factor=refine_k_factor,
                               batch_size=batch_size, use_gpu=use_gpu, show_progress=show_progress,
                               store_vectors=store_vectors)
    index.meta["build"]["kb"] = {"path": str(kb), "format": kb_format}
    if merged:
        index.meta["build"]["merge"] = [asdict(m) for m in merged]
    if prior_from:
        index.set_prior(corpus_prior(prior_from, mention_types), prior_from, prior_weight)
    index.save(output)
    return index


def build_index_streaming(rows: Callable[[], Rows], encoder: Encoder | str | Path, output: str | Path, *,
                          index_type: str = "IVF4096,PQ64", train_size: int = 100_000, chunk_size: int = 50_000,
                          batch_size: int = 256, nprobe: int | None = None, use_gpu: bool | str = False,
                          seed: int = 0, show_progress: bool = False, store_vectors: bool = False,
                          on_chunk: Callable[[list[tuple[str, str, str]], np.ndarray], None] | None = None
                          ) -> dict[str, Any]:
    """Index a KB too large for `build_index` (whose vectors are all in memory at once): `rows()`
    is called twice, once to draw a seeded uniform sample of `train_size` names (reservoir
    sampling) that trains the index, once to embed and add the names `chunk_size` at a time
    (`spacy_el.kb.streaming`). Memory: the index's codes, the table being written and one
    chunk. Rows must be unique (concept, name) pairs. `on_chunk(rows, vectors)` sees every chunk
    as it is added (e.g. to compute exact neighbours for an evaluation in the same pass).
    `store_vectors` also writes every vector to disk (float16) for exact rescoring.
    Returns the written index's meta; `ConceptIndex.load(output)` reads it."""
    if not isinstance(encoder, Encoder):
        encoder = load_encoder(encoder)
    if train_size < 1 or chunk_size < 1:
        raise InputError("train_size and chunk_size must be at least 1")
    rng = random.Random(seed)
    sample: list[str] = []
    for i, (_, name, _) in enumerate(rows()):
        if i < train_size:
            sample.append(name)
        elif (j := rng.randrange(i + 1)) < train_size:
            sample[j] = name
    if not sample:
        raise InputError("no names to index: the KB rows were empty")
    train = np.asarray(encoder.embed(sample, batch_size=batch_size), dtype="float32")

    def chunks() -> Iterator[tuple[list[tuple[str, str, str]], np.ndarray]]:
        from tqdm import tqdm

        stream = iter(rows())
        with tqdm(disable=not show_progress, unit="name", desc="index", mininterval=5.0) as bar:
            while chunk := list(itertools.islice(stream, chunk_size)):
                vectors = np.asarray(encoder.embed([r[1] for r in chunk], batch_size=batch_size), dtype="float32")
                if on_chunk is not None:
                    on_chunk(chunk, vectors)
                yield chunk, vectors
                bar.update(len(chunk))

    return build_index_from_chunks(output, train, chunks(), index_type=index_type, encoder_meta=encoder_meta(encoder),
                                   nprobe=nprobe, use_gpu=use_gpu, store_vectors=store_vectors)


def enrich_table(table: ConceptTable, merge: Iterable[str | Path], merge_format: str = "obo-xrefs"
                 ) -> tuple[ConceptTable, list[MergeStats]]:
    """`table` with the names of each KB in `merge` added to the concepts their cross-references
    name (`spacy_el.kb.merge`); each merged name's source is its KB's file name."""
    stats = []
    for path in merge:
        other, xrefs = read_merge_kb(path, merge_format)
        table, done = merge_by_xrefs(table, other, xrefs, Path(path).name)
        stats.append(done)
    return table, stats


def mention_alias_table(corpora: Iterable[str | Path], types: Iterable[str] | None = None
                        ) -> ConceptTable | None:
    """Distinct normalised mentions of annotated PubTator corpora as aliases of their gold
    concepts; each row's source is its file name (provenance for candidates and meta.json).
    `types` keeps only those mention types (BC5CDR's chemicals do not belong in a disease KB)."""
    paths = [Path(p) for p in corpora]
    if not paths:
        return None
    return ConceptTable.from_rows((cid, text, path.name) for path in paths
                                  for cid, text in mention_aliases(read_pubtator(path, types)))


def corpus_prior(corpora: Iterable[str | Path], types: Iterable[str] | None = None) -> Counter:
    """Train mentions per gold concept over annotated PubTator corpora (`ConceptIndex.set_prior`)."""
    counts: Counter = Counter()
    for path in corpora:
        counts.update(mention_concept_counts(read_pubtator(path, types)))
    return counts


@registry.misc("spacy_el.IndexFromDir.v1")
def index_from_dir(path: str, use_gpu: str = "auto", prior_weight: Optional[float] = None,
                   add_mentions: Iterable[str] = (), mention_types: Optional[Iterable[str]] = None) -> IndexLoader:
    """A loader of the index directory at `path` (checked against the encoder); `add_mentions`:
    PubTator files whose mentions are added as aliases; `prior_weight` overrides the saved one."""

    def load(encoder: Encoder) -> ConceptIndex:
        index = ConceptIndex.load(path, encoder, use_gpu=use_gpu, prior_weight=prior_weight)
        if add_mentions:
            index.add_aliases(mention_alias_table(add_mentions, mention_types), encoder)
        return index

    return load


@registry.misc("spacy_el.IndexFromKB.v1")
def index_from_kb(kb: str, kb_format: str = "auto", index_type: str = "Flat", add_mentions: Iterable[str] = (),
                  mention_types: Optional[Iterable[str]] = None, prior_from: Iterable[str] = (),
                  prior_weight: Optional[float] = None, use_gpu: str = "auto", merge: Iterable[str] = (),
                  merge_format: str = "obo-xrefs") -> IndexLoader:
    """A loader that builds the index from a KB file with the pipeline's encoder (+ names of the
    `merge` KBs through cross-references, + corpus aliases from `add_mentions`, + the corpus prior
    from `prior_from`), in memory."""

    def load(encoder: Encoder) -> ConceptIndex:
        prior = list(prior_from)
        if prior_weight is not None and not prior:
            raise InputError(f"prior_weight={prior_weight} without prior_from: name the corpus whose concept "
                             "counts the prior weighs, or drop prior_weight")
        table = enrich_table(read_kb(kb, kb_format), merge, merge_format)[0]
        index = ConceptIndex.build(table, encoder, index_type,
                                   extra=mention_alias_table(add_mentions, mention_types), use_gpu=use_gpu)
        if prior:
            index.set_prior(corpus_prior(prior, mention_types), prior, prior_weight)
        return index

    return load
