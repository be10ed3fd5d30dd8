import pytest


@pytest.mark.parametrize("command,config_name", [("spacy_el.cli.finetune:finetune_command", "finetune"),
                                                 ("spacy_el.cli.sap:distill_command", "distill")])
def test_cli_defaults_are_the_library_defaults(command, config_name):
    """The CLIs spell their defaults as literals (so `--help` does not import torch): keep them equal."""
    import importlib
    import inspect

    from spacy_el.sap.distill import DISTILL_CONFIG
    from spacy_el.sap.finetune import FINETUNE_CONFIG

    module, name = command.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    config = {"finetune": FINETUNE_CONFIG, "distill": DISTILL_CONFIG}[config_name]
    for field in ("epochs", "lr", "patience", "seed", "checkpoint_every", "max_steps"):
        default = params[field].default
        assert getattr(default, "default", default) == getattr(config, field), field
