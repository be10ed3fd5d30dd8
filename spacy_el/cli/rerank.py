"""`train-reranker` and `export-reranker`: the cross-encoder over the linker's top-k."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from spacy_el.cli import app, fail
from spacy_el.cli.options import CheckpointEvery, MaxSteps, NumThreads, Resume, Seed, Types
from spacy_el.io import InputError
from spacy_el.sap.rerank.context import DEFAULT_MAX_NAMES, DEFAULT_WINDOW
from spacy_el.sap.rerank.config import RERANK_CONFIG as DEFAULTS
from spacy_el.sap.config import TrainConfig


@app.command("train-reranker")
def train_reranker_command(
    train: List[Path] = typer.Argument(..., help="PubTator train file(s) whose mentions teach the reranker"),
    encoder: str = typer.Option(..., "--encoder", help="The linker's encoder (gives the candidates)"),
    index: Path = typer.Option(..., "--index", help="The linker's index directory, built with that encoder "
                                                    "(without the train mentions as aliases: they would find themselves)"),
    output_dir: Path = typer.Option(..., "--output", help="Run directory: checkpoint/, reranker/, rerank.json"),
    dev: List[Path] = typer.Option([], "--dev", help="PubTator dev file: weight tuning and early stopping (repeatable)"),
    fold_encoders: List[str] = typer.Option([], "--fold-encoder",
                                            help="Per train file, in order: an encoder NOT trained on it that gives "
                                                 "its candidates (cross-fitting, see `split-folds`; repeatable)"),
    fold_indexes: List[Path] = typer.Option([], "--fold-index",
                                            help="Per train file, in order: the index built with that --fold-encoder"),
    types: Types = [],
    base: str = typer.Option("", "--base", help="HF encoder the cross-encoder starts from (default: the packaged MiniLM)"),
    layers: int = typer.Option(2, "--layers", help="Transformer layers of the base kept (fewer: faster on CPU)"),
    top_k: int = typer.Option(5, "--top-k", help="Candidates per mention: the gold and the bi-encoder's wrong top-k"),
    window: int = typer.Option(DEFAULT_WINDOW, "--window", help="Characters of context each side of the mention"),
    max_names: int = typer.Option(DEFAULT_MAX_NAMES, "--max-names", help="Names shown per candidate concept"),
    max_length: int = typer.Option(96, "--max-length", help="Tokens per model input (a pair, or a listwise input)"),
    listwise: bool = typer.Option(False, "--listwise/--pairs",
                                  help="Read a mention's top-k candidates in one input (faster) instead of one pair each"),
    candidate_tokens: int = typer.Option(16, "--candidate-tokens", help="With --listwise: tokens kept per candidate"),
    teacher: str = typer.Option("", "--teacher", help="A trained reranker (torch or ONNX) to distil: its scores "
                                                      "become soft targets (e.g. 2-layer pairs → 1-layer --listwise)"),
    soft_weight: float = typer.Option(0.5, "--soft-weight", help="With --teacher: weight of its soft targets in [0, 1] "
                                                                 "(the gold label has the rest)"),
    abbreviations: bool = typer.Option(True, "--resolve-abbreviations/--no-resolve-abbreviations",
                                       help="Search short forms defined in the abstract by their long form"),
    epochs: int = typer.Option(DEFAULTS.epochs, "--epochs"),
    max_steps: MaxSteps = DEFAULTS.max_steps,
    batch_size: int = typer.Option(16, "--batch-size", help="Mentions per step (each with its candidates)"),
    lr: float = typer.Option(DEFAULTS.lr, "--lr"),
    max_train: int = typer.Option(0, "--max-train", help="Train on a seeded sample of this many mentions (0: all)"),
    max_dev: int = typer.Option(0, "--max-dev", help="Tune on a seeded sample of this many dev mentions (0: all)"),
    patience: int = typer.Option(DEFAULTS.patience, "--patience", help="With --dev: epochs without a better Acc@1"),
    seed: Seed = DEFAULTS.seed,
    checkpoint_every: CheckpointEvery = DEFAULTS.checkpoint_every,
    resume: Resume = False,
    num_threads: NumThreads = None,
) -> None:
    """Train a cross-encoder that reorders the linker's top-k by reading each mention in context."""
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.linker.link import query_texts
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker
    from spacy_el.sap.encoders import load_encoder

    try:
        config = TrainConfig(epochs=epochs, max_steps=max_steps, lr=lr, patience=patience, seed=seed,
                             warmup_steps=DEFAULTS.warmup_steps, checkpoint_every=checkpoint_every)
        settings = RerankerSettings(max_length=max_length, window=window, max_names=max_names, top_k=top_k,
                                    listwise=listwise, candidate_tokens=candidate_tokens)
        enc = load_encoder(encoder)
        if len(fold_encoders) != len(fold_indexes):
            raise InputError(f"{len(fold_encoders)} --fold-encoder but {len(fold_indexes)} --fold-index: give them "
                             "in pairs, one pair per train file")
        folds = []
        for fold_encoder, fold_index in zip(map(load_encoder, fold_encoders), fold_indexes):
            folds.append((fold_encoder, ConceptIndex.load(fold_index, fold_encoder)))
        texts = (lambda corpus, queries: query_texts(corpus, queries, True)) if abbreviations else None
        result = train_reranker(train, ConceptIndex.load(index, enc), enc, output_dir, dev=dev, types=types or None,
                                base=base or None, layers=layers, settings=settings, config=config,
                                batch_size=batch_size, max_train=max_train or None, max_dev=max_dev or None,
                                query_texts=texts, resume=resume, num_threads=num_threads,
                                teacher=load_reranker(teacher, num_threads=num_threads) if teacher else None,
                                soft_weight=soft_weight, train_linkers=folds or None)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Trained {result.steps} steps on {result.n_train_groups} mentions with wrong candidates "
               f"(of {result.n_train_mentions}; their candidate lists' Acc@1 {result.train_bi_acc1:.2f})")
    if result.dev_bi_acc1 is not None:
        per_epoch = ", ".join(f"{x:.2f}" for x in result.dev_scores)
        typer.echo(f"Dev Acc@1: bi-encoder {result.dev_bi_acc1:.2f}, reranked per epoch {per_epoch}; "
                   f"weight {result.weight}")
    typer.echo(f"Reranker: {result.reranker_dir}")


@app.command("export-reranker")
def export_reranker_command(
    reranker_dir: Path = typer.Argument(..., help="A reranker directory (`train-reranker`'s OUTPUT/reranker)"),
    output_dir: Path = typer.Argument(..., help="ONNX reranker directory to write"),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="int8 weights (CPU serving)"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT_DIR even if it holds files but no reranker"),
) -> None:
    """Export a reranker to ONNX (int8 by default) for CPU serving; `sap_linker` loads either."""
    from spacy_el.io import check_output_dir
    from spacy_el.sap.rerank.cross_encoder import CrossEncoderReranker
    from spacy_el.sap.rerank.onnx import export_onnx
    from spacy_el.sap.rerank.settings import SETTINGS_FILE

    try:
        check_output_dir(output_dir, SETTINGS_FILE, "a reranker directory", force)
        export_onnx(CrossEncoderReranker.load(reranker_dir), output_dir, quantize=quantize)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"ONNX reranker ({'int8' if quantize else 'fp32'}): {output_dir}")
