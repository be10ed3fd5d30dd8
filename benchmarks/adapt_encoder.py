"""Domain-adaptive masked-language modelling: an encoder's pretraining continued on the domain's own
text before it is fine-tuned as a tagger's or a linker's encoder. Measured, not served (RESULTS.md,
"Domain-adaptive masked-LM"): a research script, run by the `adapt-encoder` project command.

    python benchmarks/adapt_encoder.py OUTPUT_DIR [--docs FILE]... [--kb FILE]... [--definitions OBO]...
        [--base all-MiniLM-L6-v2] [--epochs 2] [--seed 0] [--resume]

Why: no biomedical encoder can be had offline, and the packaged MiniLM learnt its wordpieces from
general-domain text. A few epochs of masked-language modelling on the task's abstracts and the
KB's names and definitions ("Don't Stop Pretraining", Gururangan et al. 2020: task- and
domain-adaptive pretraining) move it toward the domain for some CPU-minutes an epoch.

How: whole-word masking (Hugging Face's `DataCollatorForWholeWordMask`, 15 %) over the texts packed
into windows of `max_length` wordpieces; the vocabulary projection is computed at the masked
positions only (over every position it is half the cost of a MiniLM step). The MLM head is new
when the base was saved without one (sentence-transformers models); it is trained with the encoder
and left out of the output. AdamW with linear warm-up and decay, gradient clipping, bf16/fp16
autocast on a GPU.

Resumable: every `checkpoint_every` steps `OUTPUT_DIR/checkpoint/` is replaced atomically with the
model, optimizer, scheduler, RNG states and step; each epoch's window order comes from the seed, so
a resumed run sees the data an uninterrupted one would have. The adapted encoder is written to
`OUTPUT_DIR/encoder/` as a Hugging Face directory (with the base's sentence-transformers pooling
files), usable wherever an encoder is named: `paths.transformer` of the trf configs, `pretrain
--base`, `finetune`.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from spacy_el.corpora.documents import read_documents
from spacy_el.io import InputError, atomic_dir
from spacy_el.kb.readers import ontology_terms, read_kb
from spacy_el.models import resolve_model
from spacy_el.sap.encoder import resolve_device, torch_threads
from spacy_el.sap.train import MixedPrecision, rng_state, seed_all, set_rng_state

CHECKPOINT = "checkpoint"
ENCODER = "encoder"
#: what a sentence-transformers directory needs besides the weights and tokenizer (its pooling)
SENTENCE_TRANSFORMERS_FILES = ("1_Pooling", "modules.json", "sentence_bert_config.json",
                               "config_sentence_transformers.json")


# ---------------------------------------------------------------------------- texts
def document_texts(path: str | Path, fmt: str = "auto") -> list[str]:
    """The documents of a PubTator, JSONL or Parquet file (a PubTator abstract: title + " " + text)."""
    return [doc.text for doc in read_documents(path, fmt) if doc.text.strip()]


def kb_texts(path: str | Path, fmt: str = "auto") -> list[str]:
    """One line per concept, its names joined by "; ": how the domain spells its terms, and which
    spellings go together."""
    names: dict[str, list[str]] = {}
    for concept_id, name, _ in read_kb(path, fmt).rows():
        names.setdefault(concept_id, []).append(name)
    return ["; ".join(group) + "." for group in names.values()]


def definition_texts(path: str | Path) -> list[str]:
    """The text definitions of an OBO ontology's terms (the Disease Ontology has ~9,700)."""
    texts = [str(term.definition).strip() for term in ontology_terms(path) if term.definition]
    if not texts:
        raise InputError(f"{path}: the ontology has no term definitions (`def:` lines); pass it as a KB instead")
    return texts


def windows(texts: Iterable[str], tokenizer, max_length: int) -> list[list[int]]:
    """The texts' wordpieces, each text closed by [SEP], packed into [CLS] … [SEP] windows of
    `max_length` (the last, shorter window dropped unless it is the only one); empty texts add nothing."""
    if max_length < 8:
        raise InputError(f"max_length={max_length}: use at least 8 wordpieces")
    ids: list[int] = []
    for text in texts:
        pieces = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if pieces:
            ids += pieces + [tokenizer.sep_token_id]
    size = max_length - 2
    cut = [ids[i:i + size] for i in range(0, len(ids), size)]
    if len(cut) > 1 and len(cut[-1]) < size:
        cut.pop()
    return [[tokenizer.cls_token_id] + piece + [tokenizer.sep_token_id] for piece in cut if piece]


# ---------------------------------------------------------------------------- training
@dataclass
class AdaptResult:
    steps: int
    windows: int
    wordpieces: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    encoder_dir: Path | None = None


def _head(model) -> torch.nn.Module:
    """The MLM head of a Hugging Face masked-LM model (BERT's `cls`, RoBERTa's `lm_head`)."""
    for name in ("cls", "lm_head", "predictions"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    raise InputError(f"{type(model).__name__}: no masked-LM head found (cls / lm_head); use a BERT- or "
                     "RoBERTa-like base encoder")


def _masked_lm_loss(model, batch: dict) -> torch.Tensor:
    """Cross-entropy at the masked positions only (the head applied to those hidden states)."""
    labels = batch.pop("labels")
    hidden = model.base_model(**batch).last_hidden_state
    masked = labels != -100
    if not masked.any():  # a batch of a few short words can draw no mask: nothing to learn, no NaN
        return hidden.sum() * 0.0
    logits = _head(model)(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[masked])


def _order(n: int, seed: int, epoch: int) -> list[int]:
    """Epoch `epoch`'s window order: a function of the seed alone, so a resumed run needs no saved order."""
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def adapt_encoder(
    texts: Sequence[str],
    base: str | Path,
    output_dir: str | Path,
    *,
    epochs: int = 2,
    max_steps: int | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    lr: float = 1e-4,
    mlm_probability: float = 0.15,
    warmup: float = 0.1,
    seed: int = 0,
    checkpoint_every: int = 100,
    resume: bool = False,
    device: str = "auto",
    num_threads: int | None = None,
    show_progress: bool = True,
) -> AdaptResult:
    """Continue `base`'s masked-language-model training on `texts`; see the module docstring."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForWholeWordMask

    if epochs < 1 and not max_steps:
        raise InputError(f"epochs={epochs}: use at least 1 (or set max_steps)")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    if not 0 < mlm_probability < 1:
        raise InputError(f"mlm_probability={mlm_probability}: use a fraction in (0, 1), e.g. 0.15")
    output_dir = Path(output_dir)
    source = resolve_model(base)
    seed_all(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = windows(texts, tokenizer, max_length)
    if not data:
        raise InputError("adapt-encoder: the texts hold no words; give documents, a KB or definitions")
    wordpieces = sum(len(w) for w in data)
    dev = resolve_device(device)
    model = AutoModelForMaskedLM.from_pretrained(source).to(dev)
    _head(model)
    model.train()
    collate = DataCollatorForWholeWordMask(tokenizer, mlm_probability=mlm_probability, return_tensors="pt")
    per_epoch = math.ceil(len(data) / batch_size)
    total = max_steps or epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(total * warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    precision = MixedPrecision(dev)
    scaler = precision.scaler

    step, losses = 0, []
    state_file = output_dir / CHECKPOINT / "state.pt"
    if resume and state_file.exists():
        saved = torch.load(state_file, map_location=dev, weights_only=False)
        if saved["windows"] != len(data) or saved["total"] != total:
            raise InputError(f"{state_file}: the checkpoint was made with other texts or settings "
                             f"({saved['windows']} windows, {saved['total']} steps; now {len(data)}, {total}); "
                             "remove it or use another OUTPUT_DIR")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        step, losses = saved["step"], saved["losses"]
    elif resume:
        print(f"no checkpoint in {output_dir / CHECKPOINT}; starting from scratch")

    def checkpoint() -> None:
        with atomic_dir(output_dir / CHECKPOINT) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                        "step": step, "losses": losses, "windows": len(data), "total": total}, tmp / "state.pt")

    started = time.monotonic()
    bar = tqdm(total=total, initial=step, desc="adapting", unit="step", disable=not show_progress)
    with torch_threads(num_threads):
        while step < total:
            epoch, at = divmod(step, per_epoch)
            order = _order(len(data), seed, epoch)
            batch = collate([{"input_ids": data[i]} for i in order[at * batch_size:(at + 1) * batch_size]])
            batch = {key: value.to(dev) for key, value in batch.items()}
            with precision.autocast():
                loss = _masked_lm_loss(model, batch)
            precision.step(loss, model, optimizer, scheduler, max_grad_norm=1.0)
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", epoch=epoch)
            if checkpoint_every and step % checkpoint_every == 0 and step < total:
                checkpoint()
    bar.close()
    checkpoint()
    encoder_dir = output_dir / ENCODER
    with atomic_dir(encoder_dir) as tmp:
        model.eval()
        model.base_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in SENTENCE_TRANSFORMERS_FILES:
            src = Path(source) / name
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            elif src.is_file():
                shutil.copy(src, tmp / name)
    result = AdaptResult(steps=step, windows=len(data), wordpieces=wordpieces,
                         seconds=round(time.monotonic() - started, 1), losses=losses, encoder_dir=encoder_dir)
    summary = {key: value for key, value in asdict(result).items() if key != "losses"}
    (output_dir / "adapt.json").write_text(json.dumps(
        {**summary, "last_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "encoder_dir": str(encoder_dir),
         "base": str(base), "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
         "max_length": max_length, "lr": lr, "mlm_probability": mlm_probability, "seed": seed}, indent=2))
    return result


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir", type=Path, help="Run directory: checkpoint/ and the adapted encoder/")
    ap.add_argument("--docs", type=Path, action="append", default=[],
                    help="Documents to read (repeatable): PubTator, JSONL or Parquet; train splits only, never the "
                         "text you evaluate on")
    ap.add_argument("--kb", type=Path, action="append", default=[],
                    help="A KB whose names are read, one line per concept (repeatable)")
    ap.add_argument("--format", dest="kb_format", default="auto",
                    help="KB format of --kb: medic, obo, obo-xrefs, tsv, drug-ner or auto (by file name)")
    ap.add_argument("--definitions", type=Path, action="append", default=[],
                    help="An OBO ontology whose term definitions are read (repeatable), e.g. the Disease Ontology")
    ap.add_argument("--base", default="all-MiniLM-L6-v2", help="Base encoder: local HF dir or hub name")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32, help="Windows per step")
    ap.add_argument("--max-length", type=int, default=128, help="Wordpieces per window")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--mlm-probability", type=float, default=0.15, help="Share of whole words masked")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-threads", type=int, default=None)
    args = ap.parse_args()
    if not (args.docs or args.kb or args.definitions):
        ap.error("no text; give --docs, --kb or --definitions")
    texts = [text for path in args.docs for text in document_texts(path)]
    texts += [text for path in args.kb for text in kb_texts(path, args.kb_format)]
    texts += [text for path in args.definitions for text in definition_texts(path)]
    result = adapt_encoder(texts, args.base, args.output_dir, epochs=args.epochs, max_steps=args.max_steps,
                           batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                           mlm_probability=args.mlm_probability, seed=args.seed,
                           checkpoint_every=args.checkpoint_every, resume=args.resume, device=args.device,
                           num_threads=args.num_threads)
    last = sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)
    print(f"Adapted on {len(texts)} texts ({result.wordpieces} wordpieces in {result.windows} windows): "
          f"{result.steps} steps, mean loss of the last 50 {last:.3f}; encoder: {result.encoder_dir}")


if __name__ == "__main__":
    main()
