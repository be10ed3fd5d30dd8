"""Data preparation commands: `umls` (MRCONSO/MRSTY → concepts.tsv + pairs.tsv), `split-folds`
(a PubTator corpus cut into document folds for cross-fitting)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.io import InputError


@app.command("umls")
def umls_command(
    meta: Path = typer.Argument(..., help="UMLS META directory or its MRCONSO.RRF file"),
    output_dir: Path = typer.Argument(..., help="Directory for concepts.tsv, pairs.tsv (+ semtypes.tsv)"),
    mrsty: Optional[Path] = typer.Option(None, "--mrsty", help="MRSTY.RRF (default: the one in META, if any)"),
    lang: List[str] = typer.Option(["ENG"], "--lang", help="Languages (LAT) to keep; 'all' keeps every one"),
    sab: List[str] = typer.Option([], "--sab", help="Keep only these source vocabularies (repeatable)"),
    exclude_sab: List[str] = typer.Option([], "--exclude-sab", help="Drop these source vocabularies"),
    tui: List[str] = typer.Option([], "--tui", help="Keep concepts with this semantic type, e.g. T047"),
    group: List[str] = typer.Option([], "--group", help="Keep concepts in this semantic group, e.g. DISO"),
    include_suppressible: bool = typer.Option(False, "--include-suppressible",
                                              help="Keep names with SUPPRESS in O/E/Y"),
    max_pairs: int = typer.Option(50, "--max-pairs", help="Synonym pairs per concept at most"),
    seed: int = typer.Option(0, "--seed"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows",
                                       help="Skip and count malformed rows instead of stopping"),
) -> None:
    """Stream MRCONSO.RRF (+ MRSTY.RRF) into concepts.tsv and pairs.tsv with bounded memory."""
    from spacy_el.umls import UmlsFilter, preprocess_umls, resolve_tuis

    try:
        filt = UmlsFilter(
            languages=None if "all" in lang else frozenset(lang),
            include_suppressible=include_suppressible,
            sabs=frozenset(sab) or None,
            exclude_sabs=frozenset(exclude_sab),
            tuis=resolve_tuis(tui, group),
        )
        stats = preprocess_umls(meta, output_dir, mrsty=mrsty, filt=filt, max_pairs=max_pairs,
                                seed=seed, skip_bad_rows=skip_bad_rows)
    except InputError as err:
        raise fail(err) from None
    typer.echo(
        f"{stats.rows:,} rows read ({stats.bad_rows:,} bad rows skipped"
        f"{f', {stats.mrsty_bad_rows:,} in MRSTY' if stats.mrsty_bad_rows else ''}), {stats.rows_kept:,} kept → "
        f"{stats.concepts:,} concepts, {stats.names:,} names, {stats.pairs:,} pairs"
    )
    for path in stats.outputs:
        typer.echo(f"wrote {path}")


@app.command("split-folds")
def split_folds_command(
    corpus: Path = typer.Argument(..., help="PubTator file to cut into document folds (e.g. NCBItrainset_corpus.txt)"),
    output_dir: Path = typer.Argument(..., help="Directory for fold{i}/heldout.txt and fold{i}/train.txt"),
    folds: int = typer.Option(3, "--folds", help="Number of folds (each document is held out in exactly one)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the documents' shuffle"),
) -> None:
    """Cut a corpus into document folds: fold i's train.txt is every other fold, so a model trained
    on it gives heldout.txt's mentions candidates it has not seen (`train-reranker --fold-encoder`)."""
    from spacy_el.corpora.pubtator import write_folds

    try:
        paths = write_folds(corpus, output_dir, folds, seed)
    except (InputError, OSError) as err:
        raise fail(err) from None
    for held, train in paths:
        typer.echo(f"{held.parent}: {held.name} + {train.name}")
