"""Options several commands share, declared once: `name: Option = default` in a signature."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

KbFormat = Annotated[str, typer.Option(
    "--format", help="KB format: medic, obo, obo-xrefs (ids carry MESH/OMIM xrefs), tsv, drug-ner "
                     "(drug-named-entity-recognition's drug_ner_dictionary.pkl.bz2) or auto (by file name)")]
Types = Annotated[List[str], typer.Option("--types", help="Mention types to keep (repeatable; default all)")]

# Training runs (pretrain, finetune, distill)
MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many steps")]
Seed = Annotated[int, typer.Option("--seed")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT_DIR/checkpoint")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N")]
NumThreads = Annotated[Optional[int], typer.Option("--num-threads", help="Torch CPU threads")]
