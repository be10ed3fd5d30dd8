"""Tagger ensembles: several trained CRF taggers of one `bilstm_ner` scored as one CRF.

Taggers trained alike but from different seeds make different mistakes, and more so on a small
corpus whose dev curve swings by a point between evaluations. `spacy_el.TaggerEnsemble.v1`
averages the members' CRF potentials (per-token emissions and the start/transition/end scores):
the average of N linear-chain CRFs is again one, so the pipe decodes it with the same
BIO-constrained Viterbi and nothing downstream changes. The cost is N forward passes.

`assemble_ensemble` builds such a pipeline from trained pipelines (e.g. `model-best` of runs
with different `--system.seed`): the first member's other components, vocab and vectors, and
the ensemble in place of its tagger. One member may read a spacy-transformers `transformer`
component (its features differ most from the BiLSTMs', so its mistakes do too): that member's
pipeline, transformer included, becomes the base, and its listener inside the ensemble is fed
by it as before. Assembled members are not trained further; trained from
scratch by `spacy train`, the architecture is a wider tagger with one CRF over N BiLSTM stacks.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

from spacy_el.io import InputError, atomic_dir, check_output_dir
from spacy_el.ner.model import BioCRF

ARCHITECTURE = "spacy_el.TaggerEnsemble.v1"


@registry.architectures(ARCHITECTURE)
def build_tagger_ensemble(*members: Model[List[Doc], List[Floats2d]]) -> Model[List[Doc], List[Floats2d]]:
    """The mean of the members' per-token emissions; its `crf` layer holds the mean of their
    start/transition/end scores (set by `average_crf`). Members: `spacy_el.BiLSTMTagger.v2`
    models with `crf = true`, given in the config as `[...model.*.member0]`, `[...model.*.member1]`, …"""
    if len(members) < 2:
        raise ValueError(f"{ARCHITECTURE}: an ensemble needs at least 2 members, got {len(members)}")
    if not all(m.has_ref("crf") for m in members):
        raise ValueError(f"{ARCHITECTURE}: every member must be a CRF tagger (spacy_el.BiLSTMTagger.v2 with crf = true)")
    crf = BioCRF(members[0].get_ref("crf").maybe_get_dim("nO"))
    model: Model = Model(
        "tagger_ensemble", _forward, init=_init, layers=[*members, crf],
        refs={"crf": crf, "output_layer": members[0].get_ref("output_layer")},
        attrs={"include_static_vectors": any(m.attrs.get("include_static_vectors") for m in members),
               "feature_dropout": None},
    )
    return model


def _members(model: Model) -> List[Model]:
    return model.layers[:-1]


def _forward(model: Model, docs: List[Doc], is_train: bool):
    outputs, callbacks = zip(*(member(docs, is_train) for member in _members(model)))
    n = len(outputs)
    mean = [sum(out[i] for out in outputs) / n for i in range(len(docs))]

    def backprop(d_mean: List[Floats2d]) -> List[Doc]:
        share = [d / n for d in d_mean]
        for callback in callbacks:
            callback(share)
        return []

    return mean, backprop


def _init(model: Model, X=None, Y=None) -> None:
    """Size every member for the ensemble's tag count (the pipe sets it on `crf`), then average."""
    n_tags = model.get_ref("crf").get_dim("nO")
    for member in _members(model):
        member.get_ref("output_layer").set_dim("nO", n_tags, force=True)
        member.get_ref("crf").set_dim("nO", n_tags, force=True)
        member.initialize(X=X)
    model.get_ref("crf").initialize()
    average_crf(model)


def average_crf(model: Model) -> None:
    """Set the ensemble's start/transition/end scores to the mean of its members'."""
    crf = model.get_ref("crf")
    for name in ("start", "trans", "end"):
        params = [member.get_ref("crf").get_param(name) for member in _members(model)]
        crf.set_param(name, sum(params) / len(params))


def _components_besides_transformers(nlp) -> List[str]:
    """The pipeline's components other than spacy-transformers `transformer`s (a listener's upstreams)."""
    return [name for name in nlp.pipe_names if nlp.config["components"][name].get("factory") != "transformer"]


def _reads_transformer(model: Model) -> bool:
    return any(node.name.startswith("transformer-listener") for node in model.walk())


def assemble_ensemble(member_dirs: Sequence[Path], output_dir: Path, component: str = "bilstm_ner",
                      force: bool = False) -> Path:
    """Write to `output_dir` a pipeline whose `component` is the ensemble of the members' taggers.

    The members must be pipelines with the same components in the same order (a transformer
    aside), the same labels and the same word vectors (they read the same features). The base,
    which gives every other component, is the one member whose tagger reads a transformer, else
    the first. Written to a temporary sibling directory, loaded back, then swapped in whole
    (`spacy_el.io.atomic_dir`). An existing non-empty `output_dir` that is not a pipeline (no
    `config.cfg`) is refused unless `force`: it would be deleted."""
    import spacy

    check_output_dir(output_dir, "config.cfg", "a spaCy pipeline", force)

    if len(member_dirs) < 2:
        raise InputError(f"ensemble: give at least 2 trained pipelines, got {len(member_dirs)}")
    nlps = []
    for path in member_dirs:
        if not (Path(path) / "config.cfg").exists():
            raise InputError(f"{path}: not a spaCy pipeline directory (no config.cfg); give e.g. a training run's model-best")
        nlp = spacy.load(path)
        if component not in nlp.pipe_names:
            raise InputError(f"{path}: no component {component!r} (has {nlp.pipe_names}); set --component")
        pipe = nlp.get_pipe(component)
        if not pipe.model.has_ref("crf") or pipe.model.name == "tagger_ensemble":
            raise InputError(f"{path}: {component!r} is not a single CRF tagger (spacy_el.BiLSTMTagger.v2, crf = true)")
        nlps.append(nlp)
    fed = [i for i, nlp in enumerate(nlps) if _reads_transformer(nlp.get_pipe(component).model)]
    if len(fed) > 1:
        raise InputError(f"{', '.join(str(member_dirs[i]) for i in fed)}: each of these taggers reads its own "
                         "transformer; an ensemble takes at most one transformer-fed member (add BiLSTM taggers)")
    order = fed + [i for i in range(len(nlps)) if i not in fed]
    nlps, member_dirs = [nlps[i] for i in order], [member_dirs[i] for i in order]
    first = nlps[0]
    components, labels = _components_besides_transformers(first), first.get_pipe(component).labels
    for path, nlp in zip(member_dirs, nlps):
        pipe = nlp.get_pipe(component)
        if _components_besides_transformers(nlp) != components or pipe.labels != labels:
            raise InputError(f"{path}: components {_components_besides_transformers(nlp)} / labels "
                             f"{list(pipe.labels)} differ from {member_dirs[0]}'s {components} / {list(labels)}")
        if nlp.vocab.vectors.shape != first.vocab.vectors.shape or not np.array_equal(
                nlp.vocab.vectors.data, first.vocab.vectors.data):
            raise InputError(f"{path}: its word vectors differ from {member_dirs[0]}'s; members must share vectors")
    config = first.config.copy()
    config["components"][component]["model"] = {
        "@architectures": ARCHITECTURE,
        "*": {f"member{i}": nlp.config["components"][component]["model"] for i, nlp in enumerate(nlps)},
    }
    ensemble = registry.resolve({"model": config["components"][component]["model"]})["model"]
    for member, nlp in zip(_members(ensemble), nlps):
        member.from_bytes(nlp.get_pipe(component).model.to_bytes())
    crf = ensemble.get_ref("crf")
    crf.set_dim("nO", len(first.get_pipe(component).tags), force=True)
    crf.initialize()
    average_crf(ensemble)

    output_dir = Path(output_dir)
    with atomic_dir(output_dir) as partial:
        first.to_disk(partial)
        config.to_disk(partial / "config.cfg")
        ensemble.to_disk(partial / component / "model")
        spacy.load(partial)  # the written pipeline loads: a broken one never takes output_dir's place
    return output_dir
