"""NER commands: vectors and corpus conversion (registered on the shared app)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.cli.options import Types
from spacy_el.io import InputError


@app.command("init-vectors")
def init_vectors_command(
    output_dir: Path = typer.Argument(..., help="Pipeline directory to write (use as [initialize] vectors)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Keep only the N most frequent words"),
    prune: Optional[int] = typer.Option(None, "--prune", help="Keep N vectors, map other words to the nearest"),
    lang: str = typer.Option("en", "--lang", help="spaCy language code of the pipeline"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT_DIR even if it holds files but no pipeline"),
) -> None:
    """Turn the packaged GloVe 6B 50d vectors into a spaCy vectors directory."""
    from spacy_el.io import check_output_dir
    from spacy_el.ner.vectors import init_glove_vectors

    try:
        check_output_dir(output_dir, "config.cfg", "a spaCy pipeline", force)
        path = init_glove_vectors(output_dir, limit=limit, prune=prune, lang=lang)
    except InputError as err:
        raise fail(err) from None
    typer.echo(f"Wrote GloVe vectors to {path}")


@app.command("convert-ner")
def convert_ner_command(
    input_path: Path = typer.Argument(..., help="PubTator (.txt), CoNLL (.txt) or TSV (.tsv) NER file"),
    output_path: Path = typer.Argument(..., help="Output .spacy file"),
    fmt: str = typer.Option("conll", "--format", help="pubtator (raw abstracts + offsets), conll (whitespace columns) or tsv (tab columns)"),
    n_sents: int = typer.Option(1, "--n-sents", help="conll/tsv: sentences per doc, within a document (e.g. 1000: whole documents)"),
    context: str = typer.Option("doc", "--context", help="pubtator: one doc per abstract (doc) or per sentence"),
    label: Optional[str] = typer.Option(None, "--label", help="pubtator: entity label for every mention (default: its type)"),
    types: Types = [],
    tokenizer: str = typer.Option("default", "--tokenizer", help="pubtator: spaCy's tokenizer (default) or spacy_el.BiomedicalTokenizer.v1 (biomedical; set the same in the training config)"),
    unannotated: List[str] = typer.Option([], "--unannotated-label", help="an entity label this corpus does not annotate (repeat for several): bilstm_ner then reads its O tokens as 'O or this label', so corpora with different label sets train one tagger"),
) -> None:
    """Convert a NER corpus to a spaCy DocBin: PubTator abstracts through spaCy's tokenizer, or a
    CoNLL/TSV file (tag in the last column)."""
    from spacy_el.ner.convert import convert_ner

    try:
        n_docs, n_tokens, n_ents = convert_ner(input_path, output_path, fmt, n_sents, types=types or None,
                                               label=label, context=context, tokenizer=tokenizer,
                                               unannotated=unannotated)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Wrote {n_docs} docs, {n_tokens} tokens, {n_ents} entities to {output_path}")


@app.command("ensemble-ner")
def ensemble_ner_command(
    output_dir: Path = typer.Argument(..., help="Pipeline directory to write"),
    members: List[Path] = typer.Argument(..., help="Two or more trained pipelines (e.g. model-best of runs with different --system.seed)"),
    component: str = typer.Option("bilstm_ner", "--component", help="The tagger component to ensemble"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT_DIR even if it holds files but no pipeline"),
) -> None:
    """One pipeline whose tagger averages the CRF scores of several trained taggers (same
    components, labels and vectors; at most one of them fed by a transformer, whose pipeline
    then gives the rest): steadier than any one seed, at the cost of one pass each."""
    from spacy_el.ner.ensemble import assemble_ensemble

    try:
        path = assemble_ensemble(members, output_dir, component=component, force=force)
    except InputError as err:
        raise fail(err) from None
    typer.echo(f"Wrote a {len(members)}-tagger ensemble to {path}")


@app.command("teacher-targets")
def teacher_targets_command(
    teacher: Path = typer.Argument(..., help="A trained tagger pipeline (e.g. an ensemble-ner pipeline)"),
    train: Path = typer.Argument(..., help="Training DocBin (.spacy, e.g. from convert-ner)"),
    output_path: Path = typer.Argument(..., help="DocBin to write: the same docs with the teacher's targets"),
    component: str = typer.Option("bilstm_ner", "--component", help="The teacher's tagger component"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    temperature: float = typer.Option(1.0, "--temperature",
                                      help="Divide the teacher's CRF scores by this (> 1 softens a teacher sure of its own training data)"),
) -> None:
    """Store a teacher tagger's CRF distribution in each training doc, for distillation: `spacy
    train` on the written DocBin trains a `bilstm_ner` on the gold and on the teacher, mixed by
    its `teacher_weight` (e.g. an ensemble's accuracy at one BiLSTM's speed)."""
    from tqdm import tqdm

    from spacy_el.ner.distill import write_teacher_targets

    with tqdm(desc="teacher targets", unit="doc") as bar:
        try:
            n = write_teacher_targets(teacher, train, output_path, component=component,
                                      batch_size=batch_size, temperature=temperature,
                                      progress=bar.update)
        except InputError as err:
            raise fail(err) from None
    typer.echo(f"Wrote {n} docs with {teacher}'s targets to {output_path}")
