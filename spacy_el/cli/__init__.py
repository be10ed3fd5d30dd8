"""The `spacy-el` command line: one typer app; each command is a thin wrapper over a library
function and lives in the module of its concern."""
import typer

app = typer.Typer(
    name="spacy-el",
    help="Entity recognition (BiLSTM) and SapBERT-style entity linking for spaCy.",
    no_args_is_help=True,
    # Markdown, not typer's default Rich markup: wrapped docstrings read as one paragraph in the
    # command list, `code` shows as code, and a literal "[initialize]" is not taken for a style tag.
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


def fail(err: Exception) -> typer.Exit:
    """Bad input ends a command with its one-line message (file, line or setting) and exit code 1."""
    typer.echo(f"Error: {err}", err=True)
    return typer.Exit(1)


# Each module registers its commands on `app` (imported for that side effect).
from spacy_el.cli import annotate, data, finetune, kb, ner, rerank, sap  # noqa: E402,F401
