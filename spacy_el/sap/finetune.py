"""Fine-tuning a SapEncoder on the annotated mentions of a corpus, BioSyn-style.

Training examples are (mention text, gold-concept name) pairs, labelled with the gold concept,
fed to the same loop, loss and miner as self-alignment pretraining (`train_encoder`); only the
batch factory differs. Each epoch, with the weights of that moment, the factory

1. embeds every KB name into an exact (`Flat`) `ConceptIndex`,
2. pairs each distinct train mention with the **nearest name of its gold concept** (the name the
   linker has to find; a fixed or random synonym would often be one the mention never resembles,
   while pretraining already pulls synonyms together), and
3. adds the mention's **top-k wrong concepts** (best name each) as hard negatives: exactly the
   confusions the linker makes now (BioSyn's refreshed candidates, Sung et al. 2020).

Corpus ids reach the KB through `id_owners` (any prefix spelling; a KB concept with several ids
such as `MESH:C567755|OMIM:613097` owns each of them). Mentions none of whose ids is in the KB,
and mentions whose ids belong to several KB concepts (unsplit composites such as "breast and
ovarian cancer"), cannot be trained on: they are counted and reported.

With a dev corpus, Acc@1 on it (SapBERT protocol, `linking_queries` + `accuracy_at_k`) is
measured before training and after every epoch; the best encoder is kept (the starting one when
no epoch beats it) and training stops after `patience` epochs without a better score. The KB
index of a set of weights is built once and shared by the dev evaluation and the next epoch's
factory, so early stopping costs no extra KB embedding.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from spacy_el.corpora.pubtator import PubTatorCorpus, linking_queries, read_pubtator
from spacy_el.evaluate import accuracy_at_k
from spacy_el.ids import id_owners, ids_match, normalize_name
from spacy_el.io import InputError, atomic_write
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.config import FINETUNE_CONFIG, TrainConfig
from spacy_el.sap.train import ENCODER, Batches, BatchFactory, SynonymPair, TrainResult, train_encoder

STATS_FILE = "finetune.json"
#: Fine-tuning's defaults: a few epochs over a few thousand mentions, early stopping on dev.


@dataclass
class MentionStats:
    """What became of the train mentions (after splitting composite ones with lined-up parts)."""

    n_queries: int = 0
    #: Distinct (mention, concept) training examples.
    n_examples: int = 0
    #: Queries none of whose gold ids is a KB id: they cannot be trained on.
    n_missing_from_kb: int = 0
    #: Queries whose gold ids belong to several KB concepts (unsplit composite mentions).
    n_multi_concept: int = 0
    #: NIL mentions (`-1`) the reader skipped.
    n_nil: int = 0
    missing_ids: list[str] = field(default_factory=list)


@dataclass
class FinetuneResult:
    train: TrainResult
    stats: MentionStats
    #: Dev Acc@1 of the starting encoder (None without a dev corpus).
    start_score: float | None = None
    #: True when no epoch beat the starting encoder on dev, so it was kept.
    kept_start: bool = False

    @property
    def encoder_dir(self) -> Path | None:
        return self.train.encoder_dir


def _corpus(source: str | Path | PubTatorCorpus, types: Sequence[str] | None) -> PubTatorCorpus:
    return source if isinstance(source, PubTatorCorpus) else read_pubtator(source, types=types)


def mention_examples(corpus: PubTatorCorpus, kb: ConceptTable) -> tuple[list[tuple[str, str]], MentionStats]:
    """Distinct (mention text, KB concept id) pairs of a corpus, and what was left out and why.
    Mentions are deduplicated case- and space-insensitively; the first spelling is kept."""
    owners = id_owners(kb.ids)
    stats = MentionStats(n_nil=corpus.n_nil)
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    missing: set[str] = set()
    for q in linking_queries(corpus):
        stats.n_queries += 1
        concepts = list(dict.fromkeys(owners[i] for i in q.gold if i in owners))
        if not concepts:
            stats.n_missing_from_kb += 1
            missing.update(q.gold)
            continue
        if len(concepts) > 1:
            stats.n_multi_concept += 1
            continue
        key = (normalize_name(q.text), concepts[0])
        if key not in seen:
            seen.add(key)
            out.append((q.text, concepts[0]))
    stats.n_examples = len(out)
    stats.missing_ids = sorted(missing)
    return out, stats


class KBVectors:
    """The KB's exact index for the current weights, rebuilt only when the weights changed
    (keyed by the encoder fingerprint), so evaluation and mining share one embedding pass."""

    def __init__(self, kb: ConceptTable, batch_size: int = 256, show_progress: bool = False,
                 index: ConceptIndex | None = None) -> None:
        self.kb = kb
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._key: str | None = index.meta["encoder"]["fingerprint"] if index is not None else None
        self._index = index
        self._rows: dict[str, list[int]] | None = None

    def index(self, encoder: SapEncoder) -> ConceptIndex:
        if self._index is None or self._key != encoder.fingerprint:
            self._index = ConceptIndex.build(self.kb, encoder, "Flat", batch_size=self.batch_size,
                                             use_gpu="auto", show_progress=self.show_progress)
            self._key = encoder.fingerprint
            self._rows = None
        return self._index

    def rows(self, encoder: SapEncoder) -> dict[str, list[int]]:
        """Concept id → its rows in the index table."""
        table = self.index(encoder).table
        if self._rows is None:
            self._rows = {}
            for row, cid in enumerate(table.ids):
                self._rows.setdefault(cid, []).append(row)
        return self._rows

    def vectors(self, encoder: SapEncoder, rows: Sequence[int]) -> np.ndarray:
        index = self.index(encoder).cpu_index
        if index is None:  # the GPU copy is the only one
            import faiss

            index = faiss.index_gpu_to_cpu(self.index(encoder).index)
        return index.reconstruct_batch(np.asarray(rows, dtype="int64"))


def hard_negative_batches(examples: Sequence[tuple[str, str]], kb: KBVectors, batch_size: int,
                          n_negatives: int, seed: int = 0) -> BatchFactory:
    """BioSyn's refreshed candidates as a batch factory (see the module docstring)."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    if n_negatives < 0:
        raise InputError(f"n_negatives={n_negatives}: use 0 or more")
    texts = [t for t, _ in examples]

    def factory(epoch: int, encoder: SapEncoder) -> Batches:
        index = kb.index(encoder)
        rows = kb.rows(encoder)
        names = index.table.names
        queries = encoder.embed(texts, batch_size=kb.batch_size)
        found = index.search(queries, k=n_negatives + 1) if n_negatives else [[] for _ in texts]
        out: list[SynonymPair] = []
        for (text, cid), vec, cands in zip(examples, queries, found):
            gold_rows = rows[cid]
            best = gold_rows[int(np.argmax(kb.vectors(encoder, gold_rows) @ vec))] if len(gold_rows) > 1 \
                else gold_rows[0]
            wrong = [(c.concept_id, c.name) for c in cands if not ids_match(c.concept_id, cid)]
            out.append(SynonymPair(cid, text, names[best], tuple(wrong[:n_negatives])))
        random.Random(f"{seed}:{epoch}").shuffle(out)
        return [out[i:i + batch_size] for i in range(0, len(out), batch_size)]

    return factory


def dev_accuracy(corpus: PubTatorCorpus, kb: KBVectors, batch_size: int = 256):
    """Acc@1 (%) on a dev corpus under SapBERT's protocol, as a `train_encoder` callback."""
    queries = linking_queries(corpus)
    if not queries:
        raise InputError(f"{corpus.path or 'the dev corpus'}: no mentions with concept ids to evaluate on")
    unique = list(dict.fromkeys(q.text for q in queries))

    def evaluate(encoder: SapEncoder) -> float:
        found = dict(zip(unique, kb.index(encoder).search(encoder.embed(unique, batch_size=batch_size), k=1)))
        ranked = [[c.concept_id for c in found[q.text]] for q in queries]
        return accuracy_at_k(ranked, [q.gold for q in queries], ks=(1,))["acc@1"]

    return evaluate


def finetune(
    train_pubtator: str | Path | PubTatorCorpus,
    kb: str | Path | ConceptTable,
    encoder_dir: str | Path,
    output_dir: str | Path,
    *,
    kb_format: str = "auto",
    types: Sequence[str] | None = None,
    dev_pubtator: str | Path | PubTatorCorpus | None = None,
    config: TrainConfig = FINETUNE_CONFIG,
    batch_size: int = 64,
    n_negatives: int = 5,
    resume: bool = False,
    kb_index: ConceptIndex | None = None,
    encoder_options: dict | None = None,
    embed_batch_size: int = 256,
    show_progress: bool = True,
) -> FinetuneResult:
    """Fine-tune the encoder in `encoder_dir` (a base model or a SAP encoder) on the train
    corpus's mentions; the result is `OUTPUT_DIR/encoder` (checkpoints in `OUTPUT_DIR/checkpoint`,
    counts and scores in `OUTPUT_DIR/finetune.json`). `config`: epochs, lr, loss, seed, patience…
    (e.g. `dataclasses.replace(FINETUNE_CONFIG, epochs=5)`). `kb_index`, a Flat index of the KB built
    with the starting encoder, saves embedding the KB once. `encoder_options` go to
    `SapEncoder.load` (device, num_threads…)."""
    from spacy_el.kb.readers import read_kb

    table = kb if isinstance(kb, ConceptTable) else read_kb(kb, kb_format)
    if not len(table):
        raise InputError(f"{kb}: no concept names read (format {kb_format!r}); check the file and --format")
    train = _corpus(train_pubtator, types)
    examples, stats = mention_examples(train, table)
    if not examples:
        raise InputError(f"{train.path or 'the train corpus'}: none of its {stats.n_queries} mentions has a "
                         f"concept id of the KB ({stats.n_missing_from_kb} absent, {stats.n_multi_concept} "
                         "spanning several concepts); check --types and that corpus and KB use the same ids")
    options = dict(encoder_options or {})
    encoder = SapEncoder.load(encoder_dir, **options)
    vectors = KBVectors(table, embed_batch_size, show_progress, kb_index)
    evaluate = start_score = None
    if dev_pubtator is not None:
        evaluate = dev_accuracy(_corpus(dev_pubtator, types), vectors, embed_batch_size)
        start_score = evaluate(encoder)
    factory = hard_negative_batches(examples, vectors, batch_size, n_negatives, config.seed)
    result = train_encoder(encoder, factory, config, output_dir, resume=resume, evaluate=evaluate,
                           show_progress=show_progress)
    kept_start = start_score is not None and start_score >= max(result.scores, default=-1.0)
    if kept_start:
        SapEncoder.load(encoder_dir, **options).save(Path(output_dir) / ENCODER)
    out = FinetuneResult(result, stats, start_score, kept_start)
    with atomic_write(Path(output_dir) / STATS_FILE) as f:
        json.dump({"start_encoder": str(encoder_dir), "train": str(train.path), "steps": result.steps,
                   "dev_acc@1_start": start_score, "dev_acc@1_per_epoch": result.scores,
                   "kept_start": kept_start, "mentions": asdict(stats),
                   "settings": asdict(config) | {"batch_size": batch_size, "n_negatives": n_negatives}}, f, indent=2)
    return out
