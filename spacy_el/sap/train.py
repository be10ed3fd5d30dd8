"""The training loop of a SapEncoder (self-alignment, Liu et al. 2021), written once for every kind of data.

The loop (`train_encoder`) knows nothing about where its examples come from: a *batch factory*
returns each epoch's batches of `SynonymPair`s, given the epoch number and the current encoder (so
fine-tuning can mine hard negatives with the weights of that moment). Pretraining on KB synonym
pairs (`spacy_el.sap.pretrain`) and fine-tuning on corpus mentions differ only in their factory.

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.distributed as dist

from spacy_el.io import InputError, atomic_dir
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.encoder import SapEncoder

CHECKPOINT = "checkpoint"
ENCODER = "encoder"


class SynonymPair(NamedTuple):
    """Two names of one concept (a positive pair), plus optional hard negatives
    `(concept_id, name)` that are embedded in the same batch with their own labels."""

    label: str
    text_a: str
    text_b: str
    negatives: tuple[tuple[str, str], ...] = ()


Batches = list[list[SynonymPair]]
#: epoch, current encoder → that epoch's batches. Must be deterministic (every DDP rank calls it).
BatchFactory = Callable[[int, SapEncoder], Batches]
#: encoder, one batch, the (possibly DDP-wrapped) model → the batch's loss. `PairLoss` by default;
#: distillation passes its own (its batches are row numbers, not `SynonymPair`s).
LossFunction = Callable[[SapEncoder, Sequence, torch.nn.Module], torch.Tensor]


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    encoder_dir: Path | None = None


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

    def __call__(self, encoder: SapEncoder, batch: Sequence[SynonymPair], model: torch.nn.Module | None = None
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


# ---------------------------------------------------------------------------- one step
@dataclass
class MixedPrecision:
    """Autocast on a GPU (bf16 where supported, else fp16 with a gradient scaler); off on the CPU."""

    device: torch.device
    enabled: bool = field(init=False)
    dtype: torch.dtype = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.enabled = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def step(self, loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, max_grad_norm: float) -> None:
        """Backward, clip the (unscaled) gradients, step the optimizer and the schedule."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        scheduler.step()


# ---------------------------------------------------------------------------- checkpoints
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainState:
    """Everything a checkpoint must restore besides the torch objects: where the run is (step,
    epoch, position in the epoch and that epoch's batches), what it has seen (losses, dev scores)
    and early stopping (best score, epochs without improvement)."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    batches: Batches | None = None
    losses: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best: float = -math.inf
    bad_epochs: int = 0


@dataclass
class _Run:
    """The torch side of one training run and where it writes (rank 0 only)."""

    encoder: SapEncoder
    config: TrainConfig
    output_dir: Path
    rank: int
    world: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    saved_at: tuple[int, int] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / CHECKPOINT

    def load_checkpoint(self, device: torch.device) -> TrainState | None:
        path = self.checkpoint_dir / "state.pt"
        if not path.exists():
            return None
        saved = torch.load(path, map_location=device, weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        return TrainState(**{f.name: saved[f.name] for f in fields(TrainState)})

    def save_checkpoint(self, state: TrainState) -> None:
        """Replace `checkpoint/` atomically (once per (step, epoch)); every rank waits for it."""
        if self.saved_at == (state.step, state.epoch):
            return
        self.saved_at = (state.step, state.epoch)
        if self.rank == 0:
            with atomic_dir(self.checkpoint_dir) as tmp:
                torch.save({
                    "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                    "rng": rng_state(), **asdict(state),
                }, tmp / "state.pt")
                (tmp / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        _barrier(self.world)

    def save_encoder(self) -> None:
        if self.rank == 0:
            self.model.eval()
            self.encoder.save(self.output_dir / ENCODER)
            self.model.train()
        _barrier(self.world)


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
    rank, world = _dist_setup()
    device = encoder.device
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        encoder.device = device
        encoder.model.to(device)

    seed_all(config.seed)
    model = encoder.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    precision = MixedPrecision(device)
    scaler = precision.scaler
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    loss_fn = loss_fn or PairLoss(config)
    run = _Run(encoder, config, output_dir, rank, world, model, optimizer, scheduler, scaler)

    state = run.load_checkpoint(device) if resume else None
    if resume and state is None and rank == 0:
        print(f"no checkpoint in {run.checkpoint_dir}; starting from scratch")
    state = state or TrainState()

    bar = None

    def postfix(**extra) -> None:
        if bar is not None:
            bar.set_postfix(loss=f"{np.mean(state.losses[-50:]):.4f}", epoch=state.epoch, **extra)

    stopped = False
    deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes else math.inf
    with encoder._threads():
        while state.epoch < config.epochs and not stopped:
            if state.batches is None:
                model.eval()
                state.batches = batches(state.epoch, encoder)
                model.train()
                if not state.batches:
                    raise InputError("the training data yields no batches; is the pairs file empty?")
            sampler = DistributedSampler(range(len(state.batches)), num_replicas=world, rank=rank,
                                         shuffle=True, seed=config.seed)
            sampler.set_epoch(state.epoch)
            local = list(sampler)
            if bar is None and show_progress and rank == 0:
                total = config.max_steps or config.epochs * len(local)
                bar = tqdm(total=total, initial=state.step, desc="training", unit="step")
            while state.epoch_step < len(local):
                at_max = config.max_steps is not None and state.step >= config.max_steps
                if at_max or _out_of_time(deadline, world, device):
                    stopped = True
                    break
                with precision.autocast():
                    loss = loss_fn(encoder, state.batches[local[state.epoch_step]], train_model)
                precision.step(loss, model, optimizer, scheduler, config.max_grad_norm)
                state.step += 1
                state.epoch_step += 1
                state.losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    postfix()
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    run.save_checkpoint(state)
            if stopped:
                break
            state.epoch, state.epoch_step, state.batches = state.epoch + 1, 0, None
            if evaluate is not None:
                model.eval()
                score = float(evaluate(encoder))
                model.train()
                state.scores.append(score)
                postfix(score=f"{score:.2f}")
                if score > state.best:
                    state.best, state.bad_epochs = score, 0
                    run.save_encoder()
                else:
                    state.bad_epochs += 1
                    stopped = config.patience is not None and state.bad_epochs >= config.patience
            run.save_checkpoint(state)
    if bar is not None:
        bar.close()
    run.save_checkpoint(state)
    if evaluate is None or not (output_dir / ENCODER).exists():
        run.save_encoder()
    model.eval()
    return TrainResult(steps=state.step, losses=state.losses, scores=state.scores, encoder_dir=output_dir / ENCODER)
