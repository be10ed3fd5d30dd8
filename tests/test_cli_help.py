"""The command line's help, as a user reads it: every command has one, and what the help strings say
reaches the screen whole (no text taken for markup, no docstring cut mid-sentence in the list)."""
from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from spacy_el.cli import app

runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)


def help_of(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    assert get_command(app).commands[command].help, f"{command} has no docstring"
    assert "Usage: " in help_of(command)


def test_command_list_gives_each_first_paragraph_on_one_line():
    listing = help_of()
    # split-folds' docstring wraps after "a model trained"; the list must not break there
    assert "so a model trained on it gives heldout.txt's mentions" in listing


def test_brackets_and_tab_separated_formats_reach_the_screen():
    assert "[initialize] vectors" in help_of("init-vectors")
    assert "concept_id TAB name [TAB source]" in help_of("update-index")
    assert "concept_id TAB name_a TAB name_b" in help_of("pretrain")
