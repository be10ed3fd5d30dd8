"""`finetune`: fine-tune an encoder on the annotated mentions of a PubTator corpus."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.cli.options import CheckpointEvery, Device, KbFormat, MaxSteps, NumThreads, Resume, Seed, Types
from spacy_el.io import InputError
from spacy_el.sap.config import FINETUNE_CONFIG as DEFAULTS
from spacy_el.sap.config import TrainConfig


@app.command("finetune")
def finetune_command(
    train: Path = typer.Argument(..., help="PubTator file of annotated train mentions (e.g. NCBItrainset_corpus.txt)"),
    kb: Path = typer.Argument(..., help="KB file: MEDIC, OBO (.obo/.obo.gz) or TSV (id TAB name)"),
    encoder_dir: str = typer.Argument(..., help="Starting encoder: a SAP encoder dir, a base HF dir or hub name"),
    output_dir: Path = typer.Argument(..., help="Run directory: checkpoint/, the final encoder/, finetune.json"),
    fmt: KbFormat = "auto",
    types: Types = [],
    dev: Optional[Path] = typer.Option(None, "--dev", help="PubTator dev file: Acc@1 early stopping, best kept"),
    epochs: int = typer.Option(DEFAULTS.epochs, "--epochs"),
    max_steps: MaxSteps = DEFAULTS.max_steps,
    batch_size: int = typer.Option(64, "--batch-size", help="Mentions per step (each with its negatives)"),
    lr: float = typer.Option(DEFAULTS.lr, "--lr"),
    negatives: int = typer.Option(5, "--negatives", help="Hard negatives per mention: its top-k wrong concepts"),
    loss: str = typer.Option(DEFAULTS.loss, "--loss",
                             help="multi_similarity (SapBERT's, as pretrain), ntxent (softmax over the batch) or supcon "
                                  "(the same objective, fast at large batches)"),
    patience: int = typer.Option(DEFAULTS.patience, "--patience", help="With --dev: epochs without a better Acc@1 before stopping"),
    seed: Seed = DEFAULTS.seed,
    checkpoint_every: CheckpointEvery = DEFAULTS.checkpoint_every,
    resume: Resume = False,
    device: Device = "auto",
    num_threads: NumThreads = None,
) -> None:
    """Fine-tune on (mention, gold-concept name) pairs with refreshed hard negatives (BioSyn recipe)."""
    from spacy_el.sap.finetune import finetune

    try:
        config = TrainConfig(epochs=epochs, max_steps=max_steps, lr=lr, loss=loss, patience=patience, seed=seed,
                             checkpoint_every=checkpoint_every)
        result = finetune(train, kb, encoder_dir, output_dir, kb_format=fmt, types=types or None, dev_pubtator=dev,
                          config=config, batch_size=batch_size, n_negatives=negatives, resume=resume,
                          encoder_options={"device": device, "num_threads": num_threads})
    except (InputError, OSError) as err:
        raise fail(err) from None
    s = result.stats
    typer.echo(f"Trained {result.train.steps} steps on {s.n_examples} distinct mentions "
               f"({s.n_missing_from_kb} mentions with ids absent from the KB, {s.n_multi_concept} spanning "
               f"several KB concepts, {s.n_nil} NIL: not trained on)")
    if result.start_score is not None:
        epochs_s = ", ".join(f"{x:.2f}" for x in result.train.scores)
        kept = "the starting encoder (no epoch beat it)" if result.kept_start else "the best epoch"
        typer.echo(f"Dev Acc@1: start {result.start_score:.2f}, per epoch {epochs_s}; kept {kept}")
    typer.echo(f"Encoder: {result.encoder_dir}")
