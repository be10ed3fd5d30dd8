"""A reranker's settings, the `Reranker` contract both runtimes meet, and the `reranker.json`
that records them with the runtime a directory holds.

The order a reranker gives is `bi-encoder cosine + weight × cross-encoder score`; `weight` is tuned
on dev by training (`spacy_el.sap.rerank.train`) over a grid that includes 0, so the combination
never ranks dev worse than the bi-encoder alone.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from spacy_el.io import InputError, atomic_write
from spacy_el.sap.rerank.context import DEFAULT_MAX_NAMES, DEFAULT_WINDOW

SETTINGS_FILE = "reranker.json"
#: Model inputs per call. On CPU small batches run fastest: their activations stay in cache.
BATCH_SIZE = 16


@dataclass(frozen=True)
class RerankerSettings:
    """What shapes a reranker's inputs and how its score is combined with the cosine."""

    #: Tokens of a (context, candidate) pair; longer pairs lose context words first.
    max_length: int = 96
    #: Characters of document text each side of the mention (`mention_in_context`).
    window: int = DEFAULT_WINDOW
    #: Names shown per candidate (`candidate_text`).
    max_names: int = DEFAULT_MAX_NAMES
    #: Order key: cosine + weight × cross-encoder score (tuned on dev; 0 = the bi-encoder's order).
    weight: float = 1.0
    #: Candidates the reranker was trained to reorder (the linker's default `rerank_top_k`).
    top_k: int = 5
    layers: int | None = None
    base: str = ""
    #: One input per mention holding all its candidates (a token head) instead of one per pair.
    listwise: bool = False
    #: Tokens kept of each candidate text in a listwise input.
    candidate_tokens: int = 16
    #: The largest max − min of its scores within one dev mention's top-k (set by training): with
    #: `weight`, how far a candidate's reranked key can move, so the linker can tell which mentions'
    #: first candidate the reranker could overturn (`worth_reranking`). None: not known (rerank all).
    score_spread: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_length", "candidate_tokens", "top_k", "max_names"):
            if getattr(self, name) < 1:
                raise InputError(f"reranker setting {name}={getattr(self, name)}: use an integer >= 1")


@runtime_checkable
class Reranker(Protocol):
    """Scores each context's candidate texts; higher is a better match."""

    settings: RerankerSettings

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]: ...

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...



def write_settings(path: Path, settings: RerankerSettings, runtime: str) -> None:
    with atomic_write(path / SETTINGS_FILE) as f:
        json.dump(dataclasses.asdict(settings) | {"runtime": runtime}, f, indent=2)


def read_settings(path: Path) -> tuple[RerankerSettings, str]:
    file = path / SETTINGS_FILE
    if not file.exists():
        raise InputError(f"{path}: not a reranker directory (no {SETTINGS_FILE}); train one with "
                         "`spacy-el train-reranker` or give the directory it wrote (OUTPUT_DIR/reranker)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{file}: not valid JSON ({err.msg}, line {err.lineno}); save the reranker again") from None
    names = {f.name for f in dataclasses.fields(RerankerSettings)}
    return RerankerSettings(**{k: v for k, v in data.items() if k in names}), data.get("runtime", "torch")


def settings_of(path: Path, runtime: str) -> RerankerSettings:
    """The settings of the reranker in `path`, which must be of `runtime`."""
    settings, found = read_settings(path)
    if found != runtime:
        raise InputError(f"{path} is a {found} reranker; load it with load_reranker")
    return settings
