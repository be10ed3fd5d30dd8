"""Composite mentions and live index updates, against MEDIC with base MiniLM (torch fp32, CPU).

1. Composite: NCBI-disease dev `CompositeMention`s with `|` ids and BC5CDR-disease dev mentions
   with `|` ids, linked as gold spans by `sap_linker` (MEDIC + the corpus's train mentions as
   aliases + its prior, `Flat`), with `composite` on and off. A mention is *fully right* when it
   has as many predicted parts as gold parts and every gold part shares an id with a predicted
   part (with `composite` off the one predicted concept is the single part).
2. Update: MEDIC's index built without 1,000 seeded-random names, then those names added with
   `update_index` (what `spacy-el update-index INDEX --add FILE` runs), against building the full
   index anew. Time both under `flock -x LOCKFILE` (the lock the machine's other heavy jobs take) for a figure worth reporting.

    python benchmarks/composite_update.py --out /tmp/cu_bench [--stage composite|update|all]

Stages keep their results in OUT/results.json; built indexes are reused.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import spacy

from spacy_el.build import build_index, index_from_dir
from spacy_el.corpora.pubtator import read_pubtator
from spacy_el.ids import ids_match
from spacy_el.kb.readers import read_medic
from spacy_el.kb.table import ConceptTable
from spacy_el.kb.update import update_index
from spacy_el.linker.link import pubtator_docs
from spacy_el.models import minilm_dir
from spacy_el.sap.encoders import encoder_from_path, load_encoder

from report import add_data_arg, data_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = data_dir()
MEDIC = DATA / "dictionaries" / "medic_06Jul2012.txt"
CORPORA = {  # name: (train, dev, types)
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
                     DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
                       DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"]),
}


def fully_right(predicted_parts: list[str], raw_gold: str) -> bool:
    gold = raw_gold.split("|")
    return len(predicted_parts) == len(gold) and all(any(ids_match(p, g) for p in predicted_parts) for g in gold)


def reduced_medic(out: Path, dev: Path, types) -> Path:
    """MEDIC rows of the concepts the dev corpus's gold ids name (every mention, so the other dev
    concepts are the distractors): a KB small enough to embed on a loaded CPU."""
    wanted = {i for m in read_pubtator(dev, types).mentions for i in m.ids}
    path = out / f"reduced_{dev.stem}.tsv"
    path.write_text("".join(f"{c}\t{n}\n" for c, n, _ in read_medic(MEDIC).rows() if set(c.split("|")) & wanted))
    return path


def composite_stage(out: Path, reduced: bool = False, corpora: tuple = tuple(CORPORA)) -> dict:
    results = {}
    for name in corpora:
        train, dev, types = CORPORA[name]
        index_dir = out / f"medic_{name}{'_reduced' if reduced else ''}"
        if not (index_dir / "meta.json").exists():
            kb, fmt = (reduced_medic(out, dev, types), "tsv") if reduced else (MEDIC, "medic")
            build_index(kb, minilm_dir(), index_dir, kb_format=fmt, add_mentions=[train],
                        mention_types=types, prior_from=[train], use_gpu=False, show_progress=True)
        nlp = spacy.blank("en")
        linker = nlp.add_pipe("sap_linker")
        linker.initialize(encoder_loader=encoder_from_path(str(minilm_dir())), index_loader=index_from_dir(str(index_dir)))
        corpus = read_pubtator(dev, types)
        pairs = pubtator_docs(nlp, corpus, with_ents=True, label="Disease")
        gold_composite = {(m.pmid, m.start, m.end): m.raw_ids for m in corpus.mentions if m.is_composite}
        row = {"n_composite_gold": len(gold_composite), "kb": "reduced (dev concepts)" if reduced else "MEDIC",
               "n_names": len(linker.index.table)}
        for setting in (False, True):
            linker.cfg["composite"] = setting
            linker.clear_cache()
            right = split = 0
            for (doc, _), pdoc in zip(pairs, corpus.docs):
                doc = linker(doc)
                for ent in doc.ents:
                    raw = gold_composite.get((pdoc.pmid, ent.start_char, ent.end_char))
                    if raw is None:
                        continue
                    parts = ent._.kb_parts
                    predicted = [c[0].concept_id for _, c in parts if c] if parts else [ent.kb_id_]
                    split += bool(parts)
                    right += fully_right(predicted, raw)
            row["on" if setting else "off"] = {"fully_right": right, "split": split}
        results[name] = row
    return results


def update_stage(out: Path, n_add: int = 1000, seed: int = 0) -> dict:
    table = read_medic(MEDIC)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(table), n_add, replace=False).tolist())
    base = ConceptTable.from_rows(r for i, r in enumerate(table.rows()) if i not in held)
    add = ConceptTable.from_rows(r for i, r in enumerate(table.rows()) if i in held)
    (out / "base.tsv").write_text("".join(f"{c}\t{n}\n" for c, n, _ in base.rows()))
    encoder = load_encoder(minilm_dir())
    if not (out / "medic_base" / "meta.json").exists():
        build_index(out / "base.tsv", encoder, out / "medic_base", kb_format="tsv", use_gpu=False)
    t0 = time.perf_counter()
    summary = update_index(out / "medic_base", add=add, encoder=encoder)
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_index(MEDIC, encoder, out / "medic_full", kb_format="medic", use_gpu=False)
    rebuild_s = time.perf_counter() - t0
    return {"names_added": summary["added_names"], "update_seconds": round(add_s, 2),
            "rebuild_seconds": round(rebuild_s, 2), "n_names": summary["n_names"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arg(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", choices=["composite", "update", "all"], default="all")
    parser.add_argument("--reduced-kb", action="store_true",
                        help="composite: only the MEDIC concepts the dev gold names (a loaded CPU's stand-in)")
    parser.add_argument("--corpus", action="append", choices=list(CORPORA), help="composite: these corpora only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    runs = (("composite_reduced" if args.reduced_kb else "composite",
             lambda out: composite_stage(out, args.reduced_kb, tuple(args.corpus or CORPORA))), ("update", update_stage))
    for stage, run in runs:
        if args.stage in (stage.split("_")[0], "all") and stage not in results:
            results[stage] = run(args.out) | {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
                                              "cpu": cpu, "load": [round(x, 2) for x in os.getloadavg()]}
            path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
