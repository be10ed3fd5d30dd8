"""NER ablation: `bilstm_ner` with each lever (CRF, characters, document context, KB gazetteer,
transformer features) switched off in turn, same data, vectors and number of epochs per variant.

    python benchmarks/ner_ablation.py --corpus ncbi --epochs 12 --parallel 2
    python benchmarks/ner_ablation.py --corpus bc5cdr --epochs 12 --variants full,no_gazetteer
    python benchmarks/ner_ablation.py --corpus conll --minutes 20 --variants full,v1_sentences
    python benchmarks/ner_ablation.py --corpus bc5cdr --more-epochs 4 --variants transformer_ft
    python benchmarks/ner_ablation.py --corpus ncbi --eval-only --variants wider_dropout_0.1_word_0.4 \
        --ensemble seeds_012=wider_dropout_0.1_word_0.4+wider_dropout_0.1_word_0.4_seed1+wider_dropout_0.1_word_0.4_seed2
    python benchmarks/ner_ablation.py --corpus conll --epochs 12 --variants wider_dropout_0.1_word_0.4 \
        --teacher conll_trf_mix3 --teacher-temperature 2

Each variant is one `spacy train` run in a subprocess (1 intra-op thread) for `--epochs` passes
over the train set (the same for every variant, so a busy machine does not change the result), or
under a wall-clock budget with `--minutes` (the time-limit callback of benchmarks/ner_conll.py,
as ner_conll.py compares systems); `model-best` is scored on dev
(spaCy's scorer over the dev docs, entity P/R/F overall and per type) and timed through
`nlp.pipe` on one thread. `--parallel 2` trains two variants at a time (one per core): accuracy
is unaffected, wall-clock speed is not comparable, so use `--eval-only` on a quiet machine to
re-time the trained models side by side. PubTator corpora are converted from the raw abstracts
with spaCy's tokenizer (`convert-ner --format pubtator`), CoNLL from its files. `--teacher NAME`
distils a trained variant or ensemble into each variant (`spacy-el teacher-targets` on its train
docs, once; the run is `VARIANT_taught_NAME_wW_TT`).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from ner_conll import evaluate  # noqa: E402
from report import cpu_model  # noqa: E402

#: corpus → (train, dev) sources, converter keyword arguments, KB for the gazetteer (format)
CORPORA = {
    "ncbi": {"train": ["ncbi_disease/NCBItrainset_corpus.txt"], "dev": "ncbi_disease/NCBIdevelopset_corpus.txt",
             "convert": {"fmt": "pubtator", "label": "Disease"}, "kb": ("dictionaries/medic_06Jul2012.txt", "medic")},
    "ncbi+cdr": {"train": ["ncbi_disease/NCBItrainset_corpus.txt", "bc5cdr/CDR_TrainingSet.PubTator.txt"],
                 "dev": "ncbi_disease/NCBIdevelopset_corpus.txt",
                 "convert": {"fmt": "pubtator", "label": "Disease"}, "types": {"CDR": ["Disease"]},
                 "kb": ("dictionaries/medic_06Jul2012.txt", "medic")},
    "bc5cdr": {"train": ["bc5cdr/CDR_TrainingSet.PubTator.txt"], "dev": "bc5cdr/CDR_DevelopmentSet.PubTator.txt",
               "convert": {"fmt": "pubtator"}, "kb": ("dictionaries/medic_06Jul2012.txt", "medic")},
    "conll": {"train": ["conll2003/train.txt"], "dev": "conll2003/dev.txt", "convert": {"fmt": "conll"}, "kb": None},
}
#: the chemical names of the *chem* variants (`--chem-kb`; `python -m spacy project run chem-names` puts them here)
CHEM_KB = REPO / "assets" / "drug_ner" / "drug_named_entity_recognition" / "drug_ner_dictionary.pkl.bz2"
#: the folder of places.tsv, first_names.tsv and surnames.tsv for the *names* variants (`--names`)
NAMES = REPO / "assets" / "conll_names"
#: 256-wide features and BiLSTM
WIDER = ["--components.bilstm_ner.model.features.embed_width", "256", "--components.bilstm_ner.model.hidden_width",
         "256"]
#: hash rows of NORM, PREFIX, SUFFIX, SHAPE: 4x the NORM rows (CoNLL's ~23k train words collide in 10k rows)
ROWS = "[40000, 2000, 5000, 1000]"
#: the config's own rows: a quarter of the 256-wide tagger's size (14 MB against 56), for the demo's wheel
DEMO_ROWS = "[10000, 2000, 5000, 1000]"


WORD_DROPOUT = "--components.bilstm_ner.model.features.word_dropout"


def wider(dropout: str, word_dropout: str = "", *more: str, rows: str = ROWS) -> List[str]:
    """Overrides for the 256-wide tagger at this `[training] dropout`, with this word dropout if any."""
    word = [WORD_DROPOUT, word_dropout] if word_dropout else []
    return ["--training.dropout", dropout, *WIDER, "--components.bilstm_ner.model.features.rows", rows, *word, *more]


DECAY = "--training.optimizer.learn_rate"
#: train on spacy_el.BiomedicalTokenizer.v1's tokens (its variants convert the corpus with it: context "sentence_bio")
BIOTOK = ["--nlp.tokenizer", '{"@tokenizers":"spacy_el.BiomedicalTokenizer.v1"}']
#: The settings every variant starts from: the tagger of the ablation (dropout 0.5, 96-wide features, a
#: 128-unit BiLSTM, 10k NORM rows, no word dropout, no epoch limit) whatever the shipped config's defaults now are
#: (configs/ner_bilstm*.cfg default to the measured best); a variant's own overrides come after these.
ABLATION_BASE = {
    "ner_bilstm.cfg": ["--training.dropout", "0.5", "--components.bilstm_ner.model.hidden_width", "128",
                       "--components.bilstm_ner.model.features.embed_width", "96",
                       "--components.bilstm_ner.model.features.rows", DEMO_ROWS, WORD_DROPOUT, "0.0"],
    "ner_bilstm_trf.cfg": ["--training.dropout", "0.5"],
}
ABLATION_BASE["ner_bilstm_kb.cfg"] = ABLATION_BASE["ner_bilstm_kb_trf.cfg"] = ABLATION_BASE["ner_bilstm.cfg"]


def config_path(config: str) -> Path:
    """A shipped config (configs/), or one only the benchmarks use (benchmarks/configs/)."""
    shipped = REPO / "configs" / config
    return shipped if shipped.exists() else BENCH / "configs" / config


#: variant → (config file, context, config overrides)
VARIANTS = {
    "full": ("ner_bilstm_kb.cfg", "doc", []),
    "no_crf": ("ner_bilstm_kb.cfg", "doc", ["--components.bilstm_ner.model.crf", "false"]),
    "no_chars": ("ner_bilstm_kb.cfg", "doc", ["--components.bilstm_ner.model.features.char_width", "0"]),
    "no_doc_context": ("ner_bilstm_kb.cfg", "sentence", []),
    # sentences + the train mentions as a 5-fold gazetteer beside the KB's
    "train_mentions": ("ner_bilstm_kb_mentions.cfg", "sentence", []),
    "no_gazetteer": ("ner_bilstm.cfg", "doc", []),
    "transformer": ("ner_bilstm_trf.cfg", "doc", []),
    # sentences + gazetteer (no_doc_context) + MiniLM fine-tuned with the tagger at 1/40 of its learning rate
    "transformer_ft": ("ner_bilstm_kb_trf.cfg", "sentence", []),
    # sentences + gazetteer (no_doc_context) in batches of ~200 words (~14 sentences) instead of 500 → 2,000:
    # the BiLSTM-CRF studies found batches of 1-32 sentences best (Reimers & Gurevych 2017)
    "small_batches": ("ner_bilstm_kb.cfg", "sentence", ["--training.batcher.size.start", "200",
                                                        "--training.batcher.size.stop", "200"]),
    # sentences + gazetteer (no_doc_context) at [training] dropout 0.2: spaCy sets the rate on every layer that
    # has one, so 0.5 drops the hashed embeddings, the static vectors, the mixing Maxout's output, the features
    # and the BiLSTM's output (the papers' 0.5 is one dropout on the input and one on the output)
    "dropout_0.2": ("ner_bilstm_kb.cfg", "sentence", ["--training.dropout", "0.2"]),
    "dropout_0.1": ("ner_bilstm_kb.cfg", "sentence", ["--training.dropout", "0.1"]),
    # dropout 0.1 with a wider embedding mix and BiLSTM (capacity, once the dropout no longer smothers it)
    "wide_dropout_0.1": ("ner_bilstm_kb.cfg", "sentence", ["--training.dropout", "0.1",
                                                           "--components.bilstm_ner.model.features.embed_width", "192",
                                                           "--components.bilstm_ner.model.hidden_width", "200"]),
    "wider_dropout_0.1": ("ner_bilstm_kb.cfg", "sentence", wider("0.1")),
    "wider_dropout_0.2": ("ner_bilstm_kb.cfg", "sentence", wider("0.2")),
    # the same with another seed: the run-to-run spread that a lever must beat
    "wider_dropout_0.1_seed1": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "", "--system.seed", "1")),
    # the learning rate decayed linearly to 0 over 12 epochs of CoNLL (1,800 steps): the wide tagger peaks early
    "wider_dropout_0.1_decay": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "", DECAY,
        '{"@schedules":"warmup_linear.v1","warmup_steps":100,"total_steps":1800,"initial_rate":0.002}')),
    # [training] dropout only before and after the BiLSTM (the papers' scheme), none inside the features
    "wider_lstm_dropout_0.5": ("ner_bilstm_kb.cfg", "sentence",
                               wider("0.5", "", "--components.bilstm_ner.model.feature_dropout", "0.0")),
    "wider_lstm_dropout_0.3": ("ner_bilstm_kb.cfg", "sentence",
                               wider("0.3", "", "--components.bilstm_ner.model.feature_dropout", "0.0")),
    # no_doc_context with word dropout
    "word_dropout_0.25": ("ner_bilstm_kb.cfg", "sentence", [WORD_DROPOUT, "0.25"]),
    "word_dropout_0.4": ("ner_bilstm_kb.cfg", "sentence", [WORD_DROPOUT, "0.4"]),
    # the wide tagger of train-conll with word dropout (a token's word vector zeroed at this rate in training)
    "wider_dropout_0.1_word_0.25": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.25")),
    "wider_dropout_0.1_word_0.4": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4")),
    "wider_dropout_0.1_word_0.4_seed1": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", "--system.seed", "1")),
    "wider_dropout_0.1_word_0.4_seed2": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", "--system.seed", "2")),
    "wider_dropout_0.1_word_0.4_seed3": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", "--system.seed", "3")),
    "wider_dropout_0.1_word_0.4_seed4": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", "--system.seed", "4")),
    "wider_dropout_0.1_word_0.55": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.55")),
    # word dropout 0.4 with 64 character filters (a dropped word is tagged from its characters) / with the
    # learning rate decayed linearly to 0 over 9 epochs of CoNLL (~1,500 steps), now that nothing overfits
    "wider_dropout_0.1_word_0.4_chars_64": ("ner_bilstm_kb.cfg", "sentence",
                                            wider("0.1", "0.4", "--components.bilstm_ner.model.features.char_width", "64")),
    "wider_dropout_0.1_word_0.4_decay": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", DECAY,
        '{"@schedules":"warmup_linear.v1","warmup_steps":100,"total_steps":1500,"initial_rate":0.002}')),
    # the word-dropout tagger with the config's 10k NORM rows: small enough for the demo's wheel
    "wider_dropout_0.1_word_0.4_rows_10k": ("ner_bilstm_kb.cfg", "sentence", wider("0.1", "0.4", rows=DEMO_ROWS)),
    # the word-dropout tagger on spacy_el.BiomedicalTokenizer.v1's tokens (corpus converted with it too)
    "wider_dropout_0.1_word_0.4_biotok": ("ner_bilstm_kb.cfg", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    "wider_dropout_0.1_word_0.4_biotok_seed1": ("ner_bilstm_kb.cfg", "sentence_bio",
                                                wider("0.1", "0.4", *BIOTOK, "--system.seed", "1")),
    "wider_dropout_0.1_word_0.4_biotok_seed2": ("ner_bilstm_kb.cfg", "sentence_bio",
                                                wider("0.1", "0.4", *BIOTOK, "--system.seed", "2")),
    # the same beside a second gazetteer of chemical and drug names (the names: --chem-kb); with the Disease
    # Ontology as a third (chem_do_*) it is configs/ner_bilstm_kb_chem.cfg, which has these settings built in
    "chem_biotok": ("ner_bilstm_kb.cfg+chem", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    "chem_biotok_seed1": ("ner_bilstm_kb.cfg+chem", "sentence_bio", wider("0.1", "0.4", *BIOTOK, "--system.seed", "1")),
    "chem_biotok_seed2": ("ner_bilstm_kb.cfg+chem", "sentence_bio", wider("0.1", "0.4", *BIOTOK, "--system.seed", "2")),
    # CoNLL: the word-dropout tagger with three name lists as gazetteers (benchmarks/configs/ner_bilstm_names.cfg has the
    # settings built in; the lists: --names, written by benchmarks/conll_gazetteers.py)
    "names": ("ner_bilstm_names.cfg", "sentence", []),
    "names_seed1": ("ner_bilstm_names.cfg", "sentence", ["--system.seed", "1"]),
    # the word-dropout tagger over MiniLM fine-tuned with it (transformer_ft's setting)
    "transformer_ft_wider_word_0.4": ("ner_bilstm_kb_trf.cfg", "sentence", wider("0.1", "0.4")),
    "transformer_ft_wider_word_0.4_biotok": ("ner_bilstm_kb_trf.cfg", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    # ... and beside the chemical gazetteer (the config written with chem_gazetteer added: `with_gazetteers`)
    "transformer_ft_chem_biotok": ("ner_bilstm_kb_trf.cfg+chem", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    # ... and beside the chemical and Disease Ontology gazetteers: chem_do_biotok's features and pipeline, so it
    # joins the chem_do seeds in one ensemble (`spacy-el ensemble-ner` takes its pipeline as the base)
    "transformer_ft_chem_do_biotok": ("ner_bilstm_kb_trf.cfg+chem+do", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    # a second transformer-fed member for the ensemble: the same from another seed (its own fine-tuned MiniLM)
    "transformer_ft_chem_do_biotok_seed1": ("ner_bilstm_kb_trf.cfg+chem+do", "sentence_bio",
                                            wider("0.1", "0.4", *BIOTOK, "--system.seed", "1")),
    # chem_biotok with the Disease Ontology's names as a third gazetteer beside MEDIC's and the chemicals'
    "chem_do_biotok": ("ner_bilstm_kb.cfg+chem+do", "sentence_bio", wider("0.1", "0.4", *BIOTOK)),
    "chem_do_biotok_seed1": ("ner_bilstm_kb.cfg+chem+do", "sentence_bio",
                             wider("0.1", "0.4", *BIOTOK, "--system.seed", "1")),
    "chem_do_biotok_seed2": ("ner_bilstm_kb.cfg+chem+do", "sentence_bio",
                             wider("0.1", "0.4", *BIOTOK, "--system.seed", "2")),
    # NCBI-disease: the word-dropout tagger with the Disease Ontology's names beside MEDIC's
    "do_wider_word_0.4": ("ner_bilstm_kb.cfg+do", "sentence", wider("0.1", "0.4")),
    "do_wider_word_0.4_seed1": ("ner_bilstm_kb.cfg+do", "sentence", wider("0.1", "0.4", "--system.seed", "1")),
    "transformer_dropout_0.2": ("ner_bilstm_trf.cfg", "doc", ["--training.dropout", "0.2"]),
    # today's released tagger before this work: v1 architecture, one sentence per doc
    "v1_sentences": ("ner_bilstm_v1.cfg", "sentence", []),
}


def prepare(data: Path, corpus: str, context: str, work: Path) -> Dict[str, Path]:
    """Convert train (several files are concatenated) and dev once per context; GloVe vectors once."""
    from spacy.tokens import DocBin

    from spacy_el.ner.convert import conll_to_docs, pubtator_to_docs
    from spacy_el.ner.tokenizer import blank
    from spacy_el.ner.vectors import init_glove_vectors

    spec = CORPORA[corpus]
    paths = {"train": work / f"train_{context}.spacy", "dev": work / f"dev_{context}.spacy",
             "vectors": work.parent / "glove50"}
    nlp = blank("en", "biomedical" if context.endswith("_bio") else "default")
    kwargs = {k: v for k, v in spec["convert"].items() if k != "fmt"}
    for split, files in (("train", spec["train"]), ("dev", [spec["dev"]])):
        if paths[split].exists():
            continue
        docs = []
        for rel in files:
            if spec["convert"]["fmt"] == "pubtator":
                # a file whose name holds a key of `types` keeps only those mention types (BC5CDR's Disease)
                types = next((t for key, t in spec.get("types", {}).items() if key in rel), None)
                docs += pubtator_to_docs(data / rel, nlp, types=types, label=kwargs.get("label"),
                                         context="doc" if context == "doc" else "sentence")
            else:
                docs += conll_to_docs(data / rel, nlp.vocab, "conll", n_sents=1000 if context == "doc" else 1)
        DocBin(docs=docs, store_user_data=False).to_disk(paths[split])
    if not paths["vectors"].exists():
        init_glove_vectors(paths["vectors"])
    return paths


def add_gazetteer(cfg, name: str, spans_key: str, label: str, init: Dict) -> None:
    """A `kb_gazetteer` named `name` added after the config's `kb_gazetteer`, its flags read by the tagger."""
    cfg["components"][name] = {"factory": "kb_gazetteer", "spans_key": spans_key, "label": label, "min_length": 2}
    cfg["nlp"]["pipeline"].insert(cfg["nlp"]["pipeline"].index("kb_gazetteer") + 1, name)
    cfg["components"]["bilstm_ner"]["model"]["features"]["gazetteers"].append(spans_key)
    cfg["training"]["annotating_components"].append(name)
    cfg["initialize"]["components"][name] = init


def with_gazetteers(config: str, work: Path, data: Path, chemicals: bool = True,
                    disease_ontology: bool = False) -> Path:
    """The KB config `config` with more gazetteers whose flags the tagger reads beside the KB's, written
    into `work` (variants `CONFIG+chem`, `+do`, `+chem+do`): `chemicals`, configs/ner_bilstm_kb_chem.cfg's
    chemical names (`--chem-kb`); `disease_ontology`, the Disease Ontology's names (3-5 % more of the dev
    disease mentions are names in it or MEDIC than in MEDIC alone)."""
    from thinc.api import Config

    cfg = Config().from_disk(config_path(config), interpolate=False)
    if chemicals:
        chem = Config().from_disk(REPO / "configs" / "ner_bilstm_kb_chem.cfg", interpolate=False)
        cfg["paths"].update({k: chem["paths"][k] for k in ("chem_kb", "chem_kb_format")})
        add_gazetteer(cfg, "chem_gazetteer", "chem_names", "CHEM", chem["initialize"]["components"]["chem_gazetteer"])
    if disease_ontology:
        add_gazetteer(cfg, "do_gazetteer", "do_names", "DO",
                      {"kb": str(data / "kb" / "disease_ontology" / "doid.obo.gz"), "kb_format": "obo"})
    path = work / config.replace(".cfg", "_chem" * chemicals + "_do" * disease_ontology + ".cfg")
    cfg.to_disk(path)
    return path


def over_transformer(variant: str, transformer: Path) -> str:
    """Register `variant` over another transformer (its run name); a variant without one stays as it is."""
    config, context, overrides = VARIANTS[variant]
    if "trf" not in config:
        return variant
    if not transformer.is_dir():
        raise SystemExit(f"--transformer {transformer}: not a directory (a Hugging Face model folder)")
    name = f"{variant}_on_{transformer.name}"
    VARIANTS[name] = (config, context, overrides + ["--paths.transformer", str(transformer.resolve())])
    return name


def taught(variant: str, teacher: str, weight: float, temperature: float) -> str:
    """The run name of `variant` distilled from `teacher` at `weight` and `temperature`."""
    return f"{variant}_taught_{teacher}_w{weight:g}_T{temperature:g}"


def teacher_docs(teacher: str, context: str, work: Path, temperature: float) -> Path:
    """The train docs of `context` with the targets of the trained `teacher` (written once)."""
    from spacy_el.ner.distill import write_teacher_targets

    path = work / f"train_{context}_teacher_{teacher}_T{temperature:g}.spacy"
    if not path.exists():
        model = work / f"out_{teacher}" / "model-best"
        if not model.exists():
            raise SystemExit(f"--teacher {teacher}: no {model}; train (or --ensemble) it first")
        write_teacher_targets(model, work / f"train_{context}.spacy", path, temperature=temperature)
    return path


def train(variant: str, corpus: str, data: Path, work: Path, minutes: float | None, epochs: int | None,
          threads: int = 1, teacher: str | None = None, teacher_weight: float = 0.5,
          temperature: float = 1.0) -> Dict:
    config, context, overrides = VARIANTS[variant]
    paths = prepare(data, corpus, context, work)
    name = variant
    if teacher:
        paths = dict(paths, train=teacher_docs(teacher, context, work, temperature))
        overrides = overrides + ["--components.bilstm_ner.teacher_weight", str(teacher_weight)]
        name = taught(variant, teacher, teacher_weight, temperature)
    base, *extra = config.split("+")
    path = (with_gazetteers(base, work, data, "chem" in extra, "do" in extra) if extra
            else config_path(config))
    cmd = [sys.executable, "-m", "spacy", "train", str(path)]
    if minutes:
        cmd += ["--training.before_update", '{"@callbacks":"spacy_el_bench.time_limit.v1","minutes":%s}' % minutes]
    if "kb" in config:  # a corpus without a KB (CoNLL) trains the same tagger without the gazetteer
        if CORPORA[corpus]["kb"] is None:
            if "mentions" in config or "trf" in config:
                raise SystemExit(f"{variant}: {corpus} has no KB for {config}")
            cmd[4] = str(config_path(config.replace("_kb", "")))
        else:
            kb, fmt = CORPORA[corpus]["kb"]
            cmd += ["--paths.kb", str(data / kb), "--paths.kb_format", fmt]
    if "chem" in config:
        if not CHEM_KB.is_file():
            raise SystemExit(f"{variant}: no chemical names at {CHEM_KB}; pass --chem-kb FILE "
                             "(`python -m spacy project run chem-names` fetches it)")
        cmd += ["--paths.chem_kb", str(CHEM_KB)]
    if "names" in config:
        if not (NAMES / "places.tsv").is_file():
            raise SystemExit(f"{variant}: no name lists in {NAMES}; pass --names DIR (benchmarks/conll_gazetteers.py)")
        cmd += ["--paths.names", str(NAMES)]
    base_settings = ABLATION_BASE.get(base, []) + ["--training.max_epochs", "0"]
    return _spacy_train(name, cmd + base_settings + overrides, paths, work, None if minutes else epochs, threads)


def train_more(variant: str, corpus: str, data: Path, work: Path, epochs: int, threads: int = 1) -> Dict:
    """`epochs` more epochs from a finished run's `model-last`, every component sourced from it (its
    weights go on; the optimizer starts afresh, as `spacy train` does for sourced components), into
    `out_{variant}+{epochs}`: a longer schedule for a run whose dev curve was still rising."""
    from spacy.util import load_config

    paths = prepare(data, corpus, VARIANTS[variant][1], work)
    last = work / f"out_{variant}" / "model-last"
    if not last.exists():
        raise SystemExit(f"{variant}: no {last} to continue; train the variant first")
    config = load_config(last / "config.cfg")
    for name in config["nlp"]["pipeline"]:
        config["components"][name] = {"source": str(last)}
    path = work / f"continue_{variant}.cfg"
    config.to_disk(path)
    return _spacy_train(f"{variant}+{epochs}", [sys.executable, "-m", "spacy", "train", str(path)], paths, work,
                        epochs, threads)


def _spacy_train(name: str, cmd: List[str], paths: Dict[str, Path], work: Path, epochs: int | None,
                 threads: int) -> Dict:
    """Run `spacy train` (a subprocess, `threads` intra-op threads) into `work/out_{name}`, `epochs`
    passes (or until the command's own time limit); its steps, epochs and wall time."""
    out, log = work / f"out_{name}", work / f"train_{name}.log"
    cmd = cmd + ["--output", str(out), "--code", str(BENCH / "ner_conll.py"),
                 "--paths.train", str(paths["train"]), "--paths.dev", str(paths["dev"]),
                 "--paths.vectors", str(paths["vectors"]), "--training.max_steps", "0"]
    if epochs:
        cmd += ["--training.max_epochs", str(epochs), "--training.patience", "0"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    if not (out / "model-best").exists():
        raise RuntimeError(f"{name}: training failed (exit {proc.returncode}); see {log}")
    stop = re.search(r"spent at step (\d+), epoch (\d+)", text)
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+[\d.]+", text, flags=re.M)
    step, epoch = (int(stop[1]), int(stop[2])) if stop else (int(rows[-1][1]) if rows else 0, epochs)
    info = {"variant": name, "train_seconds": time.time() - start, "steps": step, "epochs": epoch}
    (out / "train_info.json").write_text(json.dumps(info))
    return info


def ensemble(name: str, members: List[str], work: Path) -> str:
    """`spacy-el ensemble-ner` over the members' `model-best` into `work/out_{name}`; its train
    info sums the members' training (their time is the ensemble's cost)."""
    from spacy_el.ner.ensemble import assemble_ensemble

    outs = [work / f"out_{m}" for m in members]
    missing = [str(o) for o in outs if not (o / "model-best").exists()]
    if missing:
        raise SystemExit(f"--ensemble {name}: train its members first (no model-best in {missing})")
    out = work / f"out_{name}"
    assemble_ensemble([o / "model-best" for o in outs], out / "model-best")
    infos = [json.loads((o / "train_info.json").read_text()) for o in outs]
    info = {"variant": name, "train_seconds": sum(i["train_seconds"] for i in infos),
            "steps": sum(i["steps"] for i in infos), "epochs": sum(i["epochs"] for i in infos), "members": members}
    (out / "train_info.json").write_text(json.dumps(info))
    return name


def score(variant: str, corpus: str, data: Path, work: Path, n_process: bool) -> Dict:
    context = VARIANTS[variant.split("+")[0]][1]
    out = work / f"out_{variant}"
    info = json.loads((out / "train_info.json").read_text())
    info.update(evaluate(out / "model-best", work / f"dev_{context}.spacy", n_processes=(1, 2) if n_process else (1,)))
    return info


def markdown(corpus: str, budget: str, rows: List[Dict], command: str) -> str:
    types = sorted({t for r in rows for t in r["per_type"]})
    lines = [
        f"### NER ablation, {corpus} dev, {budget} per variant", "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_model()}, 2 cores, no GPU (CPU figures); Python {platform.python_version()}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.1f} "
        "when timed. words/s: `nlp.pipe` over the dev docs, 1 process, 1 thread, best of 2.", "",
        "| variant | dev F1 | P | R | " + " | ".join(f"F1 {t}" for t in types) + " | steps / epochs / train min | words/s |",
        "|---|---|---|---|" + "---|" * len(types) + "---|---|",
    ]
    for r in rows:
        per = " | ".join(f"{100 * r['per_type'].get(t, 0.0):.2f}" for t in types)
        lines.append(f"| {r['variant']} | **{100 * r['f']:.2f}** | {100 * r['p']:.2f} | {100 * r['r']:.2f} | {per} | "
                     f"{r['steps']} / {r['epochs']} / {r['train_seconds'] / 60:.1f} | {r['wps1']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    global CHEM_KB, NAMES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder (default: ../shared/data beside this clone)")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ncbi")
    parser.add_argument("--variants", default="full,no_crf,no_chars,no_doc_context,no_gazetteer,v1_sentences")
    parser.add_argument("--epochs", type=int, default=12, help="passes over the train set per variant")
    parser.add_argument("--minutes", type=float, default=None, help="a wall-clock budget per variant instead of --epochs")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once (1 thread each)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per training run")
    parser.add_argument("--more-epochs", type=int, default=0,
                        help="train this many more epochs from each variant's model-last (scored as VARIANT+N)")
    parser.add_argument("--eval-only", action="store_true", help="re-score the models a previous run left")
    parser.add_argument("--n-process", action="store_true", help="also time nlp.pipe(n_process=2)")
    parser.add_argument("--chem-kb", type=Path, default=CHEM_KB, help="chemical names of the *chem* variants")
    parser.add_argument("--names", type=Path, default=NAMES, help="name lists of the *names* variants")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spacy_el_ner_ablation")
    parser.add_argument("--ensemble", action="append", default=[], metavar="NAME=V1+V2[+…]",
                        help="also score the ensemble (spacy-el ensemble-ner) of these trained variants as NAME")
    parser.add_argument("--teacher", default=None, metavar="NAME",
                        help="distil this trained variant or ensemble (out_NAME/model-best) into each variant")
    parser.add_argument("--teacher-weight", type=float, default=0.8,
                        help="with --teacher: bilstm_ner's teacher_weight (0.8: the better of 0.5 and 0.8 on CoNLL dev)")
    parser.add_argument("--teacher-temperature", type=float, default=1.0,
                        help="with --teacher: soften its targets (spacy-el teacher-targets --temperature)")
    parser.add_argument("--transformer", type=Path, default=None, metavar="DIR",
                        help="the transformer-fed variants over this Hugging Face directory instead of the packaged "
                             "MiniLM (e.g. `benchmarks/adapt_encoder.py`'s output); runs named VARIANT_on_DIRNAME")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    CHEM_KB, NAMES = args.chem_kb, args.names
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.transformer:
        variants = [over_transformer(v, args.transformer) for v in variants]
    work = args.work / args.corpus
    work.mkdir(parents=True, exist_ok=True)
    for context in sorted({VARIANTS[v][1] for v in variants}):  # convert once, before any parallel run
        prepare(args.data, args.corpus, context, work)
    if args.more_epochs:
        def run(v):
            return train_more(v, args.corpus, args.data, work, args.more_epochs, args.threads)
    else:
        if args.teacher:  # its targets written once, before any parallel run
            for context in sorted({VARIANTS[v][1] for v in variants}):
                teacher_docs(args.teacher, context, work, args.teacher_temperature)

        def run(v):
            return train(v, args.corpus, args.data, work, args.minutes, args.epochs, args.threads,
                         args.teacher, args.teacher_weight, args.teacher_temperature)
    if not args.eval_only:
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            for info in pool.map(run, variants):
                print(json.dumps(info), flush=True)
    if args.more_epochs:
        variants = [f"{v}+{args.more_epochs}" for v in variants]
    elif args.teacher:
        names = {v: taught(v, args.teacher, args.teacher_weight, args.teacher_temperature) for v in variants}
        for v, name in names.items():
            VARIANTS[name] = VARIANTS[v]
        variants = list(names.values())
    for spec in args.ensemble:
        name, _, members = spec.partition("=")
        members = [m for m in members.split("+") if m]
        if not name or len(members) < 2 or set(members) - set(VARIANTS):
            parser.error(f"--ensemble {spec!r}: expected NAME=VARIANT+VARIANT[+…] of known variants")
        VARIANTS[name] = VARIANTS[members[0]]  # the members' data and context
        variants.append(ensemble(name, members, work))
    rows = [score(v, args.corpus, args.data, work, args.n_process) for v in variants]
    budget = (f"{args.more_epochs} more epochs" if args.more_epochs else f"{args.minutes:g}-minute training budget"
              if args.minutes else f"{args.epochs} epochs")
    block = markdown(args.corpus, budget, rows, "python benchmarks/ner_ablation.py " + " ".join(sys.argv[1:]))
    (work / "results.md").write_text(block)
    print(block)


if __name__ == "__main__":
    main()
