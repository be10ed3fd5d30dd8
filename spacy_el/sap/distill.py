"""A small, fast student distilled from a SapEncoder, for CPU linking.

On a 2-core CPU the transformer is the linker's ceiling: int8 MiniLM embeds ~500 names/s on an
AVX2 machine, while its *embedding layer alone*, mean-pooled, embeds ~15,000 and, untrained,
still links NCBI-disease dev at 73 Acc@1 (6 layers: 79; scispaCy's TF-IDF: 68;
`benchmarks/truncated_encoder.py`). Distillation closes that gap without labels:

- the student is the teacher's own embeddings plus its first `layers` transformer layers
  (`layers=0`: a contextless bag of word pieces with position embeddings and LayerNorm), saved
  as a plain Hugging Face directory, so `SapEncoder`, ONNX export, the index and the linker take
  it unchanged;
- the targets are the teacher's L2-normalised vectors of the texts the linker will compare: the
  KB's names and, optionally, the mention texts of PubTator corpora (no labels used), embedded
  once and kept in `OUTPUT_DIR/teacher.npy` so a resumed run does not redo it;
- the loss per batch is the mean cosine distance between student and teacher vectors plus
  `relational` × the MSE between their in-batch similarity matrices (it keeps who-is-near-whom,
  which is what the nearest-neighbour search reads, rather than only each point);
- the loop, checkpoints, `--resume`, progress bar and dev early stopping are `train_encoder`'s,
  with Acc@1 on a dev corpus (`dev_accuracy`) as the score when one is given.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spacy_el.corpora.pubtator import linking_queries, read_pubtator
from spacy_el.io import InputError, atomic_write
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.finetune import KBVectors, dev_accuracy
from spacy_el.sap.config import DISTILL_CONFIG, TrainConfig
from spacy_el.sap.pretrain import random_batches
from spacy_el.sap.train import TrainResult, train_encoder

TEACHER_FILE = "teacher.npy"
STATS_FILE = "distill.json"
#: Distillation's defaults: a high rate (a 0-layer student moves only its embeddings), more epochs.


def student_of(teacher: SapEncoder, layers: int) -> SapEncoder:
    """A copy of the teacher keeping its embeddings and first `layers` transformer layers."""
    model = copy.deepcopy(teacher.model).cpu()
    stack, owner, attr = _layer_stack(model)
    if not 0 <= layers <= len(stack):
        raise InputError(f"layers={layers}: the teacher has {len(stack)} transformer layers; use 0 to {len(stack)}")
    setattr(owner, attr, torch.nn.ModuleList(list(stack)[:layers]))
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, layers)
    return SapEncoder(model, teacher.tokenizer, teacher.settings, teacher.device, teacher.num_threads)


def _layer_stack(model: torch.nn.Module) -> tuple[torch.nn.ModuleList, torch.nn.Module, str]:
    """The ModuleList of transformer layers (BERT/RoBERTa: encoder.layer; DistilBERT: transformer.layer)."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        owner: torch.nn.Module | None = model
        *parents, attr = path.split(".")
        for name in parents:
            owner = getattr(owner, name, None)
        stack = getattr(owner, attr, None) if owner is not None else None
        if isinstance(stack, torch.nn.ModuleList):
            return stack, owner, attr
    raise InputError(f"cannot find the transformer layers of a {type(model).__name__} "
                     "(looked for encoder.layer, transformer.layer, layers); distil from a BERT-like encoder")


def distillation_texts(kb: ConceptTable, corpora: Sequence[str | Path] = (), types: Sequence[str] | None = None
                       ) -> list[str]:
    """The KB's names, then the corpora's mention texts (as the linker queries them), deduplicated."""
    texts = list(kb.names)
    for path in corpora:
        texts += [q.text for q in linking_queries(read_pubtator(path, types=types))]
    return list(dict.fromkeys(t for t in texts if t.strip()))


class DistillLoss:
    """Cosine distance to the teacher's vectors + `relational` × MSE of in-batch similarities.
    A batch is a list of row numbers into `texts`/`targets`."""

    def __init__(self, texts: Sequence[str], targets: np.ndarray, relational: float = 1.0) -> None:
        if len(texts) != len(targets):
            raise InputError(f"{len(texts)} texts but {len(targets)} teacher vectors")
        self.texts, self.targets, self.relational = list(texts), torch.from_numpy(targets), relational

    def __call__(self, encoder: SapEncoder, batch: Sequence[int], model: torch.nn.Module | None = None
                 ) -> torch.Tensor:
        rows = list(batch)
        student = torch.nn.functional.normalize(
            encoder.encode_for_training([self.texts[r] for r in rows], model=model).float(), dim=-1)
        teacher = self.targets[rows].to(student.device)
        loss = (1 - (student * teacher).sum(-1)).mean()
        if self.relational:
            loss = loss + self.relational * torch.nn.functional.mse_loss(student @ student.T, teacher @ teacher.T)
        return loss


def teacher_vectors(teacher, texts: Sequence[str], output_dir: Path, batch_size: int = 256,
                    show_progress: bool = True) -> np.ndarray:
    """The teacher's vectors of `texts`, cached in OUTPUT_DIR/teacher.npy under a key of the
    teacher's fingerprint and the texts (a changed teacher or text list recomputes them)."""
    key = hashlib.blake2b((teacher.fingerprint + "\n" + "\n".join(texts)).encode(), digest_size=16).hexdigest()
    path, meta = output_dir / TEACHER_FILE, output_dir / (TEACHER_FILE + ".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == key:
        return np.load(path)
    vectors = teacher.embed(list(texts), batch_size=batch_size, show_progress=show_progress).astype(np.float32)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.save(f, vectors)
    with atomic_write(meta) as f:
        json.dump({"key": key, "n": len(texts), "teacher_fingerprint": teacher.fingerprint}, f)
    return vectors


@dataclass
class DistillResult:
    train: TrainResult
    n_texts: int
    layers: int
    #: Dev Acc@1 of the teacher and of the untrained student (None without a dev corpus).
    teacher_score: float | None = None
    start_score: float | None = None

    @property
    def encoder_dir(self) -> Path | None:
        return self.train.encoder_dir


def distill(
    teacher_dir: str | Path,
    kb: str | Path | ConceptTable,
    output_dir: str | Path,
    *,
    layers: int = 0,
    kb_format: str = "auto",
    corpora: Sequence[str | Path] = (),
    types: Sequence[str] | None = None,
    dev_pubtator: str | Path | None = None,
    config: TrainConfig = DISTILL_CONFIG,
    batch_size: int = 256,
    relational: float = 1.0,
    resume: bool = False,
    encoder_options: dict | None = None,
    embed_batch_size: int = 256,
    show_progress: bool = True,
) -> DistillResult:
    """Distil `teacher_dir` into a student of `layers` transformer layers on the KB's names and
    the `corpora`'s mention texts; the student is `OUTPUT_DIR/encoder` (the best dev epoch when
    `dev_pubtator` is given). `config`: epochs, lr, seed, patience… (its `loss` is unused: the
    loss is `DistillLoss`). `encoder_options` go to `SapEncoder.load` (device, num_threads…)."""
    from spacy_el.kb.readers import read_kb

    output_dir = Path(output_dir)
    table = kb if isinstance(kb, ConceptTable) else read_kb(kb, kb_format)
    if not len(table):
        raise InputError(f"{kb}: no concept names read (format {kb_format!r}); check the file and --format")
    teacher = SapEncoder.load(teacher_dir, **(encoder_options or {}))
    student = student_of(teacher, layers)
    texts = distillation_texts(table, corpora, types)
    targets = teacher_vectors(teacher, texts, output_dir, embed_batch_size, show_progress)
    evaluate = teacher_score = start_score = None
    if dev_pubtator is not None:
        dev = read_pubtator(dev_pubtator, types=types)
        evaluate = dev_accuracy(dev, KBVectors(table, embed_batch_size), embed_batch_size)
        if not resume:
            row = {text: i for i, text in enumerate(texts)}  # the KB's names are among the targets
            names = np.stack([targets[row[n]] if n in row else teacher.embed([n])[0] for n in table.names])
            teacher_kb = ConceptIndex.from_vectors(table, names, "Flat", encoder=teacher)
            teacher_score = dev_accuracy(dev, KBVectors(table, index=teacher_kb), embed_batch_size)(teacher)
            start_score = evaluate(student)
    del teacher
    started = time.perf_counter()
    result = train_encoder(student, random_batches(range(len(texts)), batch_size, config.seed), config, output_dir,
                           resume=resume, evaluate=evaluate, loss_fn=DistillLoss(texts, targets, relational),
                           show_progress=show_progress)
    seconds = time.perf_counter() - started
    out = DistillResult(result, len(texts), layers, teacher_score, start_score)
    with atomic_write(output_dir / STATS_FILE) as f:
        json.dump({"teacher": str(teacher_dir), "layers": layers, "n_texts": len(texts),
                   "corpora": [str(c) for c in corpora], "steps": result.steps,
                   "dev_acc@1_teacher": teacher_score, "dev_acc@1_start": start_score,
                   "dev_acc@1_per_epoch": result.scores, "final_loss": result.losses[-1] if result.losses else None,
                   "seconds": round(seconds, 1),
                   "settings": asdict(config) | {"batch_size": batch_size, "relational": relational}}, f, indent=2)
    return out
