"""Self-alignment training of a SapEncoder (Liu et al. 2021), written once for every kind of data.

The loop (`train_encoder`) knows nothing about where its examples come from: a *batch factory*
returns each epoch's batches of `Example`s, given the epoch number and the current encoder (so
fine-tuning can mine hard negatives with the weights of that moment). Pretraining on KB synonym
pairs (`pretrain`) and fine-tuning on corpus mentions differ only in their factory.

Per batch, as in SapBERT's code: all `text_a`s then all `text_b`s (then any hard negatives) are
embedded and concatenated, the concept ids (mapped to ints) are the labels, pytorch-metric-learning's
`TripletMarginMiner(margin=0.2, type_of_triplets="all")` mines the batch online and
`MultiSimilarityLoss(alpha=1, beta=60, base=0.5)` is the loss. AdamW, gradient clipping, AMP on GPU.

Resumable: every `checkpoint_every` steps `OUTPUT_DIR/checkpoint/` is replaced atomically with the
model, optimizer, scheduler, AMP scaler, RNG states, step and the current epoch's batches, so a
resumed run continues with exactly the data and randomness an uninterrupted run would have used.
The final (or, with `evaluate`, the best) encoder is saved to `OUTPUT_DIR/encoder/`.

Distributed: under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel
(nccl on GPU, gloo on CPU), each epoch's batches are sharded with a DistributedSampler and only
rank 0 writes. Each rank's step runs one batch, so the global batch is world_size × batch.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.distributed as dist

from spacy_el.io import InputError, atomic_dir
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.pairs import read_pairs

CHECKPOINT = "checkpoint"
LOSSES = ("multi_similarity", "ntxent", "supcon")
ENCODER = "encoder"


class Example(NamedTuple):
    """Two names of one concept (a positive pair), plus optional hard negatives
    `(concept_id, name)` that are embedded in the same batch with their own labels."""

    label: str
    text_a: str
    text_b: str
    negatives: tuple[tuple[str, str], ...] = ()


Batches = list[list[Example]]
#: epoch, current encoder → that epoch's batches. Must be deterministic (every DDP rank calls it).
BatchFactory = Callable[[int, SapEncoder], Batches]
#: encoder, one batch, the (possibly DDP-wrapped) model → the batch's loss. `PairLoss` by default;
#: distillation passes its own (its batches are row numbers, not `Example`s).
LossFunction = Callable[[SapEncoder, Sequence, torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None
    #: Wall-clock budget of this session (a CPU budget); the run stops with a checkpoint, so
    #: `resume` can continue it. Unlike `max_steps` the result then depends on machine speed.
    max_minutes: float | None = None
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    #: "multi_similarity" (SapBERT: MultiSimilarityLoss over TripletMarginMiner's hard pairs) or
    #: "ntxent" (NTXentLoss over all pairs, the softmax objective sentence encoders such as MiniLM
    #: were trained with; gentler when fine-tuning one on a few thousand mentions) or "supcon"
    #: (SupConLoss: the same objective when each text has one positive, as in random batches of
    #: synonym pairs, but O(batch²) memory where NTXentLoss builds a positives × negatives
    #: matrix: an order of magnitude faster at 256 pairs per batch, `benchmarks/pair_losses.py`).
    loss: str = "multi_similarity"
    #: Softmax temperature of "ntxent" and "supcon".
    temperature: float = 0.05
    #: MultiSimilarityLoss / TripletMarginMiner settings (SapBERT's values).
    ms_alpha: float = 1.0
    ms_beta: float = 60.0
    ms_base: float = 0.5
    miner_margin: float = 0.2
    #: With `evaluate`: stop after this many epochs without a better score.
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"loss={self.loss!r}: use one of {', '.join(LOSSES)}")


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    encoder_dir: Path | None = None


def random_batches(examples: Sequence[Example], batch_size: int, seed: int = 0) -> BatchFactory:
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


def neighbour_batches(examples: Sequence[Example], batch_size: int, seed: int = 0,
                      neighbours: int = 64) -> BatchFactory:
    """Hard batches: each batch holds one pair from each of `batch_size` concepts that the
    current encoder places close together (one name per concept, re-embedded every epoch), so
    the online miner finds informative negatives in every step, not only in lucky ones.

    A concept's pairs are spread over successive rounds (one pair per concept per round); each
    round groups the concepts that still have pairs left around seeds taken in a seeded order."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    by_label: dict[str, list[Example]] = {}
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


# ---------------------------------------------------------------------------- distributed
def _dist_setup() -> tuple[int, int]:
    """(rank, world_size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _out_of_time(deadline: float, world: int, device: torch.device) -> bool:
    """Past the wall-clock budget; under DDP every rank stops when any rank is (no hang)."""
    if deadline == math.inf:
        return False
    over = torch.tensor([float(time.monotonic() > deadline)], device=device)  # nccl needs CUDA tensors
    if world > 1:
        dist.all_reduce(over, op=dist.ReduceOp.MAX)
    return bool(over.item())


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# ---------------------------------------------------------------------------- loss
class PairLoss:
    """The loss of a batch of examples: multi-similarity over mined hard pairs, or a softmax
    over all pairs (NT-Xent or SupCon; `TrainConfig.loss`)."""

    def __init__(self, config: TrainConfig) -> None:
        from pytorch_metric_learning import losses, miners

        if config.loss == "multi_similarity":
            self.loss = losses.MultiSimilarityLoss(alpha=config.ms_alpha, beta=config.ms_beta, base=config.ms_base)
            self.miner = miners.TripletMarginMiner(margin=config.miner_margin, type_of_triplets="all")
        elif config.loss == "supcon":
            self.loss, self.miner = losses.SupConLoss(temperature=config.temperature), None
        else:
            self.loss, self.miner = losses.NTXentLoss(temperature=config.temperature), None

    def __call__(self, encoder: SapEncoder, batch: Sequence[Example], model: torch.nn.Module | None = None
                 ) -> torch.Tensor:
        texts = [e.text_a for e in batch] + [e.text_b for e in batch]
        names = [e.label for e in batch] * 2
        for e in batch:
            for label, text in e.negatives:
                texts.append(text)
                names.append(label)
        ids = {name: i for i, name in enumerate(dict.fromkeys(names))}
        labels = torch.tensor([ids[n] for n in names], device=encoder.device)
        return self.of_embeddings(encoder.encode_for_training(texts, model=model).float(), labels)

    def of_embeddings(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of embedded texts whose concepts are `labels` (pairs mined first when the loss mines)."""
        return self.loss(emb, labels, self.miner(emb, labels) if self.miner is not None else None)


# ---------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- the loop
def train_encoder(
    encoder: SapEncoder,
    batches: BatchFactory,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    evaluate: Callable[[SapEncoder], float] | None = None,
    loss_fn: LossFunction | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train `encoder.model` in place on the factory's batches; see the module docstring.
    `evaluate` (higher is better) runs after each epoch: the best encoder is kept and training
    stops after `config.patience` epochs without improvement. `loss_fn` replaces the config's
    pair loss."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    ckpt_dir = output_dir / CHECKPOINT
    rank, world = _dist_setup()
    device = encoder.device
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        encoder.device = device
        encoder.model.to(device)

    _seed_all(config.seed)
    model = encoder.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    loss_fn = loss_fn or PairLoss(config)

    step, epoch, epoch_step, epoch_batches = 0, 0, 0, None
    result = TrainResult(steps=0)
    best, bad_epochs = -math.inf, 0
    if resume and (ckpt_dir / "state.pt").exists():
        state = torch.load(ckpt_dir / "state.pt", map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        step, epoch, epoch_step, epoch_batches = state["step"], state["epoch"], state["epoch_step"], state["batches"]
        result.losses, result.scores = state["losses"], state["scores"]
        best, bad_epochs = state["best"], state["bad_epochs"]
    elif resume and rank == 0:
        print(f"no checkpoint in {ckpt_dir}; starting from scratch")

    saved_at: tuple[int, int] | None = None

    def save_checkpoint() -> None:
        nonlocal saved_at
        if saved_at == (step, epoch):
            return
        saved_at = (step, epoch)
        if rank == 0:
            with atomic_dir(ckpt_dir) as tmp:
                torch.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                    "step": step, "epoch": epoch, "epoch_step": epoch_step, "batches": epoch_batches,
                    "losses": result.losses, "scores": result.scores, "best": best, "bad_epochs": bad_epochs,
                }, tmp / "state.pt")
                (tmp / "config.json").write_text(json.dumps(asdict(config), indent=2))
        _barrier(world)

    def save_encoder() -> None:
        if rank == 0:
            model.eval()
            encoder.save(output_dir / ENCODER)
            model.train()
        _barrier(world)

    def postfix(**extra) -> None:
        if bar is not None:
            bar.set_postfix(loss=f"{np.mean(result.losses[-50:]):.4f}", epoch=epoch, **extra)

    bar = None
    stopped = False
    deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes else math.inf
    with encoder._threads():
        while epoch < config.epochs and not stopped:
            if epoch_batches is None:
                model.eval()
                epoch_batches = batches(epoch, encoder)
                model.train()
                if not epoch_batches:
                    raise InputError("the training data yields no batches; is the pairs file empty?")
            sampler = DistributedSampler(range(len(epoch_batches)), num_replicas=world, rank=rank,
                                         shuffle=True, seed=config.seed)
            sampler.set_epoch(epoch)
            local = list(sampler)
            if bar is None and show_progress and rank == 0:
                total = config.max_steps or config.epochs * len(local)
                bar = tqdm(total=total, initial=step, desc="training", unit="step")
            while epoch_step < len(local):
                at_max = config.max_steps is not None and step >= config.max_steps
                if at_max or _out_of_time(deadline, world, device):
                    stopped = True
                    break
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = loss_fn(encoder, epoch_batches[local[epoch_step]], train_model)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                epoch_step += 1
                result.losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    postfix()
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save_checkpoint()
            if stopped:
                break
            epoch, epoch_step, epoch_batches = epoch + 1, 0, None
            if evaluate is not None:
                model.eval()
                score = float(evaluate(encoder))
                model.train()
                result.scores.append(score)
                postfix(score=f"{score:.2f}")
                if score > best:
                    best, bad_epochs = score, 0
                    save_encoder()
                else:
                    bad_epochs += 1
                    stopped = config.patience is not None and bad_epochs >= config.patience
            save_checkpoint()
    if bar is not None:
        bar.close()
    save_checkpoint()
    if evaluate is None or not (output_dir / ENCODER).exists():
        save_encoder()
    model.eval()
    result.steps = step
    result.encoder_dir = output_dir / ENCODER
    return result


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
    examples = [Example(*row) for row in read_pairs(pairs_path)]
    encoder = SapEncoder.load(base, **(encoder_options or {}))
    return train_encoder(encoder, factories[batching](examples, batch_size, config.seed), config, output_dir,
                         resume=resume, show_progress=show_progress)
