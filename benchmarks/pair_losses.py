"""Cost of one training step's loss (forward + backward) for the three pair losses of `pretrain`
and `finetune` (`TrainConfig.loss`), all in one run, at growing batch sizes:

- `multi_similarity`: SapBERT's MultiSimilarityLoss over TripletMarginMiner's hard pairs,
- `ntxent`: pytorch-metric-learning's NTXentLoss (a positives × negatives matrix),
- `supcon`: its SupConLoss (batch × batch; NT-Xent's value when every text has one positive).

Batches are random MEDIC synonym pairs (`make_pairs`, as `pretrain` samples them); the embeddings
are random unit vectors of MiniLM's width, so the encoder's cost, the same for every loss, is left
out. Also the difference between the `ntxent` and `supcon` values on the same embeddings.

    python benchmarks/pair_losses.py [--threads 2]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from spacy_el.kb.readers import read_medic
from spacy_el.sap.pairs import make_pairs
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.train import PairLoss

from report import add_data_arg, data_dir  # noqa: E402

DATA = data_dir()
LOSSES = ("multi_similarity", "ntxent", "supcon")


def batch_labels(pairs, n_pairs: int, rng: random.Random) -> torch.Tensor:
    """Concept numbers of a random batch laid out as PairLoss does: the pairs' first texts, then their seconds."""
    batch = rng.sample(pairs, n_pairs)
    ids = {c: i for i, c in enumerate(dict.fromkeys(p[0] for p in batch))}
    return torch.tensor([ids[p[0]] for p in batch] * 2)


def step_seconds(loss: PairLoss, labels: torch.Tensor, dim: int, repeats: int) -> tuple[float, float]:
    """Median seconds of loss + backward over `repeats` fresh embeddings, and the last loss value."""
    times, value = [], 0.0
    for _ in range(repeats):
        emb = torch.nn.functional.normalize(torch.randn(len(labels), dim), dim=1).requires_grad_()
        start = time.perf_counter()
        out = loss.of_embeddings(emb, labels)
        out.backward()
        times.append(time.perf_counter() - start)
        value = float(out.detach())
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(parser)
    parser.add_argument("--medic", type=Path, default=DATA / "dictionaries" / "medic_06Jul2012.txt")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = make_pairs(read_medic(args.medic), max_pairs_per_concept=50, seed=0)
    print(f"`python benchmarks/pair_losses.py --threads {args.threads}` — {dt.date.today()}, "
          f"{platform.processor() or platform.machine()}, {args.threads} torch threads, CPU; "
          f"{len(pairs)} MEDIC pairs; median of {args.repeats}\n")
    print("| pairs per batch | texts | " + " | ".join(f"{name} (ms)" for name in LOSSES)
          + " | ntxent / supcon | ntxent − supcon value |")
    print("|---|---|" + "---|" * (len(LOSSES) + 2))
    for n_pairs in args.batch_sizes:
        ms, values = {}, {}
        for name in LOSSES:
            torch.manual_seed(0)
            labels = batch_labels(pairs, n_pairs, random.Random(n_pairs))
            seconds, values[name] = step_seconds(PairLoss(TrainConfig(loss=name)), labels, args.dim, args.repeats)
            ms[name] = 1000 * seconds
        gap = values["ntxent"] - values["supcon"]  # same seed and labels: the same embeddings
        print(f"| {n_pairs} | {2 * n_pairs} | " + " | ".join(f"{ms[name]:,.1f}" for name in LOSSES)
              + f" | {ms['ntxent'] / ms['supcon']:.0f}× | {gap:.2e} |", flush=True)


if __name__ == "__main__":
    main()
