"""SAP commands: `make-pairs` (KB → pairs.tsv), `pretrain` (pairs.tsv → encoder directory), `distill` (encoder → small fast student) and `export-onnx`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.cli.options import CheckpointEvery, Device, KbFormat, MaxSteps, NumThreads, Resume, Seed, Types
from spacy_el.io import InputError
from spacy_el.sap.config import DISTILL_CONFIG, PRETRAIN_CONFIG, TrainConfig


@app.command("make-pairs")
def make_pairs_command(
    kb: Path = typer.Argument(..., help="KB file: MEDIC (IDS||name|…), OBO (.obo/.obo.gz) or TSV (id TAB name)"),
    output: Path = typer.Argument(..., help="pairs.tsv to write (concept_id TAB name_a TAB name_b)"),
    fmt: KbFormat = "auto",
    max_pairs: int = typer.Option(50, "--max-pairs", help="Synonym pairs per concept at most"),
    seed: int = typer.Option(0, "--seed", help="Seed of the pair sample"),
) -> None:
    """Make self-alignment pairs: every synonym pair of each concept, capped and seeded."""
    from spacy_el.kb.readers import read_kb
    from spacy_el.sap.pairs import make_pairs, write_pairs

    try:
        table = read_kb(kb, fmt)
        pairs = make_pairs(table, max_pairs_per_concept=max_pairs, seed=seed)
        write_pairs(output, pairs)
    except InputError as err:
        raise fail(err) from None
    typer.echo(f"Wrote {len(pairs)} pairs for {table.n_concepts} concepts ({len(table)} names) to {output}")


@app.command("pretrain")
def pretrain_command(
    pairs: Path = typer.Argument(..., help="pairs.tsv (concept_id TAB name_a TAB name_b)"),
    output_dir: Path = typer.Argument(..., help="Run directory: checkpoint/ and the final encoder/"),
    base: str = typer.Option("all-MiniLM-L6-v2", "--base", help="Base encoder: local HF dir or hub name"),
    epochs: int = typer.Option(PRETRAIN_CONFIG.epochs, "--epochs"),
    max_steps: MaxSteps = PRETRAIN_CONFIG.max_steps,
    batch_size: int = typer.Option(64, "--batch-size", help="Pairs per step (per process under torchrun)"),
    batching: str = typer.Option("random", "--batching",
                                 help="random (SapBERT) or neighbours (hard batches of look-alike concepts)"),
    lr: float = typer.Option(PRETRAIN_CONFIG.lr, "--lr"),
    loss: str = typer.Option(PRETRAIN_CONFIG.loss, "--loss",
                             help="multi_similarity (SapBERT), ntxent or supcon (ntxent's objective, fast at large batches)"),
    warmup_steps: int = typer.Option(PRETRAIN_CONFIG.warmup_steps, "--warmup-steps"),
    checkpoint_every: CheckpointEvery = PRETRAIN_CONFIG.checkpoint_every,
    resume: Resume = False,
    seed: Seed = PRETRAIN_CONFIG.seed,
    pooling: Optional[str] = typer.Option(None, "--pooling", help="cls or mean (default: the base's own)"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per name (default 25)"),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase"),
    device: Device = "auto",
    num_threads: NumThreads = None,
) -> None:
    """Self-alignment pretraining (multi-similarity loss, online-mined pairs); resumable; torchrun-ready."""
    from spacy_el.sap.pretrain import pretrain

    options = {"device": device, "pooling": pooling, "max_length": max_length, "lowercase": lowercase,
               "num_threads": num_threads}
    try:
        config = TrainConfig(epochs=epochs, max_steps=max_steps, lr=lr, warmup_steps=warmup_steps,
                             seed=seed, checkpoint_every=checkpoint_every, loss=loss)
        result = pretrain(pairs, output_dir, base=base, batch_size=batch_size, batching=batching, config=config,
                          resume=resume, encoder_options=options)
    except InputError as err:
        raise fail(err) from None
    last = sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)
    typer.echo(f"Trained {result.steps} steps (mean loss of the last 50: {last:.4f}); encoder: {result.encoder_dir}")


@app.command("distill")
def distill_command(
    teacher: str = typer.Argument(..., help="Encoder to distil: a SAP / fine-tuned encoder dir, an HF dir or hub name"),
    kb: Path = typer.Argument(..., help="KB file whose names are the training texts: MEDIC, OBO or TSV"),
    output_dir: Path = typer.Argument(..., help="Run directory: teacher.npy, checkpoint/, the student encoder/"),
    layers: int = typer.Option(0, "--layers", help="Transformer layers the student keeps (0: embeddings only)"),
    fmt: KbFormat = "auto",
    corpus: List[Path] = typer.Option([], "--corpus", help="PubTator file whose mention texts are added (repeatable)"),
    types: Types = [],
    dev: Optional[Path] = typer.Option(None, "--dev", help="PubTator dev file: Acc@1 per epoch, best kept"),
    epochs: int = typer.Option(DISTILL_CONFIG.epochs, "--epochs"),
    max_steps: MaxSteps = DISTILL_CONFIG.max_steps,
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per step"),
    lr: float = typer.Option(DISTILL_CONFIG.lr, "--lr", help="High for a 0-layer student: only embeddings move"),
    relational: float = typer.Option(1.0, "--relational", help="Weight of the in-batch similarity-matrix MSE"),
    patience: int = typer.Option(DISTILL_CONFIG.patience, "--patience", help="With --dev: epochs without a better Acc@1 before stopping"),
    seed: Seed = DISTILL_CONFIG.seed,
    checkpoint_every: CheckpointEvery = DISTILL_CONFIG.checkpoint_every,
    resume: Resume = False,
    device: Device = "auto",
    num_threads: NumThreads = None,
) -> None:
    """Distil a student (the teacher's first N layers) that reproduces the teacher's vectors: CPU speed."""
    from spacy_el.sap.distill import distill

    try:
        config = TrainConfig(epochs=epochs, max_steps=max_steps, lr=lr, patience=patience, seed=seed,
                             checkpoint_every=checkpoint_every)
        result = distill(teacher, kb, output_dir, layers=layers, kb_format=fmt, corpora=corpus, types=types or None,
                         dev_pubtator=dev, config=config, batch_size=batch_size, relational=relational,
                         resume=resume, encoder_options={"device": device, "num_threads": num_threads})
    except (InputError, OSError) as err:
        raise fail(err) from None
    losses = result.train.losses
    typer.echo(f"Distilled a {result.layers}-layer student on {result.n_texts} texts in {result.train.steps} steps "
               f"(loss {losses[0]:.4f} → {losses[-1]:.4f})" if losses else "No training steps run")
    if result.teacher_score is not None:
        epochs_s = ", ".join(f"{x:.2f}" for x in result.train.scores)
        typer.echo(f"Dev Acc@1: teacher {result.teacher_score:.2f}, untrained student {result.start_score:.2f}, "
                   f"per epoch {epochs_s}")
    typer.echo(f"Student encoder: {result.encoder_dir}")


@app.command("export-onnx")
def export_onnx_command(
    encoder_dir: str = typer.Argument(..., help="Encoder to export: a SAP encoder dir, an HF dir or hub name"),
    output_dir: Path = typer.Argument(..., help="ONNX encoder directory to write (model.onnx, tokenizer.json, …)"),
    quantize: bool = typer.Option(False, "--quantize/--no-quantize",
                                  help="int8 weights (about 2x faster on CPU; the index must be built with it)"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT_DIR even if it holds files but no encoder"),
) -> None:
    """Export an encoder for serving with ONNX Runtime: faster and lighter to load than torch."""
    from spacy_el.io import check_output_dir
    from spacy_el.sap.encoder import SapEncoder
    from spacy_el.sap.onnx import OnnxEncoder
    from spacy_el.sap.settings import SETTINGS_FILE

    try:
        check_output_dir(output_dir, SETTINGS_FILE, "an encoder directory", force)
        onnx = OnnxEncoder.export(SapEncoder.load(encoder_dir, device="cpu"), output_dir, quantize=quantize)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Exported {encoder_dir} ({'int8' if quantize else 'fp32'}, fingerprint {onnx.fingerprint}) → "
               f"{output_dir}")
