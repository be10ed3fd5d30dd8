"""SAP commands: `make-pairs` (KB → pairs.tsv) and `pretrain` (pairs.tsv → encoder directory)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.io import InputError


@app.command("make-pairs")
def make_pairs_command(
    kb: Path = typer.Argument(..., help="KB file: MEDIC (IDS||name|…), OBO (.obo/.obo.gz) or TSV (id<TAB>name)"),
    output: Path = typer.Argument(..., help="pairs.tsv to write (concept_id<TAB>name_a<TAB>name_b)"),
    fmt: str = typer.Option("auto", "--format", help="medic, obo, obo-xrefs (ids carry MESH/OMIM xrefs), tsv or auto (by file name)"),
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
    pairs: Path = typer.Argument(..., help="pairs.tsv (concept_id<TAB>name_a<TAB>name_b)"),
    output_dir: Path = typer.Argument(..., help="Run directory: checkpoint/ and the final encoder/"),
    base: str = typer.Option("all-MiniLM-L6-v2", "--base", help="Base encoder: local HF dir or hub name"),
    epochs: int = typer.Option(1, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps"),
    batch_size: int = typer.Option(64, "--batch-size", help="Pairs per step (per process under torchrun)"),
    batching: str = typer.Option("random", "--batching",
                                 help="random (SapBERT) or neighbours (hard batches of look-alike concepts)"),
    lr: float = typer.Option(2e-5, "--lr"),
    loss: str = typer.Option("multi_similarity", "--loss", help="multi_similarity (SapBERT) or ntxent"),
    warmup_steps: int = typer.Option(0, "--warmup-steps"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints"),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/checkpoint"),
    seed: int = typer.Option(0, "--seed"),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="cls or mean (default: the base's own)"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per name (default 25)"),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    num_threads: Optional[int] = typer.Option(None, "--num-threads", help="Torch CPU threads"),
) -> None:
    """Self-alignment pretraining (multi-similarity loss, online-mined pairs); resumable; torchrun-ready."""
    from spacy_el.sap.pretrain import TrainConfig, pretrain

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


@app.command("export-onnx")
def export_onnx_command(
    encoder_dir: str = typer.Argument(..., help="Encoder to export: a SAP encoder dir, an HF dir or hub name"),
    output_dir: Path = typer.Argument(..., help="ONNX encoder directory to write (model.onnx, tokenizer.json, …)"),
    quantize: bool = typer.Option(False, "--quantize/--no-quantize",
                                  help="int8 weights (about 2x faster on CPU; the index must be built with it)"),
) -> None:
    """Export an encoder for serving with ONNX Runtime: faster and lighter to load than torch."""
    from spacy_el.sap.encoder import SapEncoder
    from spacy_el.sap.onnx import OnnxEncoder

    try:
        onnx = OnnxEncoder.export(SapEncoder.load(encoder_dir, device="cpu"), output_dir, quantize=quantize)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Exported {encoder_dir} ({'int8' if quantize else 'fp32'}, fingerprint {onnx.fingerprint}) → "
               f"{output_dir}")
