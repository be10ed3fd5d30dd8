"""Self-alignment pretraining on KB synonym pairs (`spacy-el pretrain`): the batch factories
(SapBERT's random batches, or hard batches of concepts the encoder confuses) over the generic loop
of `spacy_el.sap.train`."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np

from spacy_el.io import InputError
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.pairs import read_pairs
from spacy_el.sap.train import Batches, BatchFactory, SynonymPair, TrainResult, train_encoder


def random_batches(examples: Sequence[SynonymPair], batch_size: int, seed: int = 0) -> BatchFactory:
    """SapBERT's batching: each epoch a fresh seeded shuffle of all examples, cut into batches."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    examples = list(examples)

    def factory(epoch: int, encoder: SapEncoder) -> Batches:
        order = list(examples)
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    return factory


def _nearest(vectors: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Indices of each row's k most similar other rows (exact, blockwise to bound memory)."""
    k = min(k, len(vectors) - 1)
    out = np.zeros((len(vectors), max(k, 0)), dtype=np.int64)
    if k <= 0:
        return out
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors.T
        np.fill_diagonal(sims[:, start:start + block], -np.inf)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start:start + block] = np.take_along_axis(top, order, axis=1)
    return out


def neighbour_batches(examples: Sequence[SynonymPair], batch_size: int, seed: int = 0,
                      neighbours: int = 64) -> BatchFactory:
    """Hard batches: each batch holds one pair from each of `batch_size` concepts that the
    current encoder places close together (one name per concept, re-embedded every epoch), so
    the online miner finds informative negatives in every step, not only in lucky ones.

    A concept's pairs are spread over successive rounds (one pair per concept per round); each
    round groups the concepts that still have pairs left around seeds taken in a seeded order."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    by_label: dict[str, list[SynonymPair]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    labels = list(by_label)

    def factory(epoch: int, encoder: SapEncoder) -> Batches:
        rng = random.Random(f"{seed}:{epoch}")
        knn = _nearest(encoder.embed([by_label[lab][0].text_a for lab in labels]), neighbours)
        queues = [rng.sample(by_label[lab], len(by_label[lab])) for lab in labels]
        batches: Batches = []
        while active := [i for i, q in enumerate(queues) if q]:
            rng.shuffle(active)
            free = set(active)
            fill = iter(active)
            for i in active:
                if i not in free:
                    continue
                group = [i] + [int(j) for j in knn[i] if j in free and j != i][:batch_size - 1]
                free.difference_update(group)
                while len(group) < batch_size and free:
                    j = next(fill)
                    if j in free:
                        group.append(j)
                        free.discard(j)
                batches.append([queues[g].pop() for g in group])
        return batches

    return factory


def pretrain(
    pairs_path: str | Path,
    output_dir: str | Path,
    *,
    base: str | Path = "all-MiniLM-L6-v2",
    batch_size: int = 64,
    batching: str = "random",
    config: TrainConfig | None = None,
    resume: bool = False,
    encoder_options: dict | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Self-alignment pretraining on a `pairs.tsv`: SapBERT's `random` batches of synonym pairs,
    or `neighbours` (hard batches of concepts the encoder confuses, see `neighbour_batches`).
    `encoder_options` go to `SapEncoder.load` (device, pooling, max_length, lowercase, num_threads)."""
    factories = {"random": random_batches, "neighbours": neighbour_batches}
    if batching not in factories:
        raise InputError(f"batching={batching!r}: use one of {', '.join(factories)}")
    config = config or TrainConfig()
    examples = [SynonymPair(*row) for row in read_pairs(pairs_path)]
    encoder = SapEncoder.load(base, **(encoder_options or {}))
    return train_encoder(encoder, factories[batching](examples, batch_size, config.seed), config, output_dir,
                         resume=resume, show_progress=show_progress)
