"""`spacy_el.TaggerEnsemble.v1` and `assemble_ensemble`: trained taggers averaged as one CRF."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.util import fix_random_seed
from thinc.api import Adam

from spacy_el.io import InputError
from spacy_el.ner.crf import viterbi
from spacy_el.ner.ensemble import assemble_ensemble

TEXTS = ["Barack Obama visited Paris last week .", "Google hired John Smith in Berlin .", "", "Nothing to see here ."]


def _member(kit, tmp_path, seed: int, n_iter: int = 30):
    """A tiny CRF tagger trained from `seed`, saved as a pipeline."""
    features = dict(kit.TINY_V2["features"], gazetteers=[])
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=features)})
    examples = kit.make_examples(nlp)
    fix_random_seed(seed)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    path = tmp_path / f"member{seed}"
    nlp.to_disk(path)
    return nlp, path


@pytest.fixture(scope="module")
def members(kit, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("members")
    return [_member(kit, tmp, seed) for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory):
    path = assemble_ensemble([p for _, p in members], tmp_path_factory.mktemp("ens") / "new_dir" / "ensemble")
    return spacy.load(path), path


def _ents(nlp, texts=TEXTS):
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


def _ents_in_two_processes(path):
    """`_ents` of TEXTS twice over, from the pipeline at `path` loaded in a fresh interpreter and run
    with `nlp.pipe(n_process=2)`."""
    code = (f"import spacy, json; nlp = spacy.load({str(path)!r}); "
            f"print(json.dumps([[[e.start_char, e.end_char, e.label_] for e in d.ents] "
            f"for d in nlp.pipe({TEXTS * 2!r}, n_process=2, batch_size=2)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return [[tuple(e) for e in doc] for doc in json.loads(out.stdout.strip().splitlines()[-1])]


def _mean_crf(emissions, scores):
    """The members' mean emissions per doc and the Viterbi path of the averaged CRF over them:
    `emissions[m][d]` is member m's on doc d, `scores[m]` its (start, transition, end) scores."""
    mean = [np.mean([e[i] for e in emissions], axis=0) for i in range(len(emissions[0]))]
    start, trans, end = (np.mean([s[k] for s in scores], axis=0) for k in range(3))
    return mean, viterbi(mean, start, trans, end)


def test_ensemble_decodes_the_mean_of_the_members_crf_scores(members, ensemble):
    """The ensemble's tags are the Viterbi path of the averaged emissions and transitions,
    computed here by hand from the members themselves."""
    nlp, _ = ensemble
    docs = [nlp.make_doc(t) for t in TEXTS if t]
    pipes = [m.get_pipe("bilstm_ner") for m, _ in members]
    emissions = [[np.asarray(x) for x in p.model.predict(docs)] for p in pipes]
    _, expected = _mean_crf(emissions, [p.crf_scores() for p in pipes])
    got = nlp.get_pipe("bilstm_ner").predict(docs).tag_ids
    assert [list(g) for g in got] == [list(e) for e in expected]
    assert nlp.get_pipe("bilstm_ner").model.name == "tagger_ensemble"


def test_ensemble_finds_what_its_members_learned_and_handles_empty_docs(members, ensemble):
    nlp, _ = ensemble
    got = _ents(nlp)
    assert ("Barack Obama", "PER") in [(TEXTS[0][s:e], label) for s, e, label in got[0]]
    assert got[2] == []  # empty doc
    long_doc = nlp(" ".join(["Obama visited Paris ."] * 300))
    assert len(long_doc) == 1200 and all(e.label_ in ("PER", "LOC", "ORG") for e in long_doc.ents)


def test_ensemble_round_trips_and_runs_in_two_processes(ensemble, tmp_path):
    nlp, path = ensemble
    expected = _ents(nlp)
    fresh = spacy.load(path)
    fresh.from_bytes(nlp.to_bytes())
    assert _ents(fresh) == expected
    nlp.to_disk(tmp_path / "again")
    assert _ents(spacy.load(tmp_path / "again")) == expected
    assert _ents_in_two_processes(path) == expected * 2


def test_ensemble_trains_from_scratch_with_spacy(kit):
    """As a config architecture it also trains: N BiLSTM stacks under one CRF."""
    member = dict(kit.TINY_V2, features=dict(kit.TINY_V2["features"], gazetteers=[]))
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": {"@architectures": "spacy_el.TaggerEnsemble.v1",
                                                 "*": {"a": member, "b": member}}})
    kit.train_tiny(nlp, kit.make_examples(nlp), n_iter=40)
    assert ("Paris", "LOC") in [(e.text, e.label_) for e in nlp(kit.TRAIN_DATA[0][0]).ents]


def test_bad_members_are_named(members, kit, tmp_path):
    paths = [p for _, p in members]
    with pytest.raises(InputError, match="at least 2"):
        assemble_ensemble(paths[:1], tmp_path / "out")
    with pytest.raises(InputError, match="no config.cfg"):
        assemble_ensemble([paths[0], tmp_path], tmp_path / "out")
    other = spacy.blank("en")
    other.add_pipe("bilstm_ner", config={"model": dict(kit.TINY_V2, features=dict(kit.TINY_V2["features"], gazetteers=[]))})
    examples = kit.make_examples(other, [("Paris is big .", [(0, 5, "LOC")])])
    other.initialize(lambda: examples)
    other.to_disk(tmp_path / "one_label")
    with pytest.raises(InputError, match="labels"):
        assemble_ensemble([paths[0], tmp_path / "one_label"], tmp_path / "out")
    softmax = spacy.blank("en")
    softmax.add_pipe("bilstm_ner", config={"model": kit.TINY_MODEL})
    softmax.initialize(lambda: kit.make_examples(softmax))
    softmax.to_disk(tmp_path / "softmax")
    with pytest.raises(InputError, match="not a single CRF tagger"):
        assemble_ensemble([paths[0], tmp_path / "softmax"], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(ValueError, match="at least 2 members"):
        spacy.blank("en").add_pipe("bilstm_ner", config={"model": {"@architectures": "spacy_el.TaggerEnsemble.v1",
                                                                   "*": {"a": kit.TINY_V2}}})


def test_cli_assembles(members, tmp_path):
    out = subprocess.run([sys.executable, "-m", "spacy_el", "ensemble-ner", str(tmp_path / "ens"),
                          *(str(p) for _, p in members[:2])], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2-tagger ensemble" in out.stdout
    assert spacy.load(tmp_path / "ens")("Obama visited Paris .") is not None
    bad = subprocess.run([sys.executable, "-m", "spacy_el", "ensemble-ner", str(tmp_path / "x"), str(members[0][1])],
                         capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "at least 2" in bad.stderr + bad.stdout


def _transformer_member(kit, tiny_bert_dir, tmp_path, name: str):
    """configs/ner_bilstm_trf.cfg trained a few steps on a tiny BERT: a tagger fed by a transformer."""
    from spacy.cli.train import train
    from spacy.tokens import DocBin

    DocBin(docs=[eg.reference for eg in kit.make_examples(spacy.blank("en"))]).to_disk(tmp_path / "train.spacy")
    config = Path(__file__).resolve().parents[2] / "configs" / "ner_bilstm_trf.cfg"
    train(config, tmp_path / name, overrides={**kit.trf_overrides(tmp_path / "train.spacy", tiny_bert_dir),
                                              "training.max_steps": 6, "training.eval_frequency": 3})
    return tmp_path / name / "model-last"


def test_one_transformer_fed_member_joins_bilstm_members(members, kit, tiny_bert_dir, tmp_path):
    """A transformer-fed tagger and a BiLSTM tagger: the ensemble keeps the transformer (whatever
    the members' order) and decodes the mean of both members' CRF scores; a second
    transformer-fed member is refused by name."""
    pytest.importorskip("spacy_transformers")
    fed = _transformer_member(kit, tiny_bert_dir, tmp_path, "fed")
    path = assemble_ensemble([members[0][1], fed], tmp_path / "mixed")
    nlp = spacy.load(path)
    assert nlp.pipe_names == ["transformer", "bilstm_ner"]
    fed_nlp, plain_nlp = spacy.load(fed), members[0][0]
    texts = [t for t in TEXTS if t]
    fed_docs = list(fed_nlp.pipe(texts, disable=["bilstm_ner"]))  # the transformer's output on each doc
    pipes = [fed_nlp.get_pipe("bilstm_ner"), plain_nlp.get_pipe("bilstm_ner")]
    emissions = [[np.asarray(x) for x in pipes[0].model.predict(fed_docs)],
                 [np.asarray(x) for x in pipes[1].model.predict([plain_nlp.make_doc(t) for t in texts])]]
    mean, tags = _mean_crf(emissions, [p.crf_scores() for p in pipes])
    docs = list(nlp.pipe(texts, disable=["bilstm_ner"]))
    got = nlp.get_pipe("bilstm_ner").model.predict(docs)
    assert all(np.allclose(np.asarray(g), m, atol=1e-5) for g, m in zip(got, mean))  # the listener is fed
    assert [list(g) for g in nlp.get_pipe("bilstm_ner").predict(docs).tag_ids] == [list(t) for t in tags]
    expected = _ents(nlp)
    assert _ents(spacy.load(path)) == expected and _ents(nlp) == expected
    assert _ents_in_two_processes(path) == expected * 2
    with pytest.raises(InputError, match="at most one transformer-fed member"):
        assemble_ensemble([fed, members[1][1], fed], tmp_path / "two")


def test_an_output_holding_other_files_is_refused_unless_forced(members, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    paths = [str(p) for _, p in members[:2]]
    bad = subprocess.run([sys.executable, "-m", "spacy_el", "ensemble-ner", str(out), *paths],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{out}: exists and holds notes.txt but no config.cfg" in bad.stderr and "--force" in bad.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assemble_ensemble([p for _, p in members[:2]], out, force=True)
    assert (out / "config.cfg").exists() and not (out / "notes.txt").exists()
    assemble_ensemble([p for _, p in members[:2]], out)  # a pipeline it wrote is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no partial directory left beside it
