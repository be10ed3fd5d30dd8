"""Reranker and KB-enrichment benchmark: NCBI-disease dev and BC5CDR-disease dev against MEDIC,
Acc@1/Acc@5 (SapBERT protocol, abbreviations resolved) in one run, for

- dictionaries: plain MEDIC, MEDIC + Disease Ontology synonyms merged through DO's MESH/OMIM
  xrefs (`build-index --merge doid.obo.gz`), each ± the corpus's own train mentions as aliases;
- ± the cross-encoder reranker over the top 5 (`spacy-el train-reranker`, served ONNX int8).

Evaluation is `spacy_el.linker.link.evaluate_linking` (what `spacy-el evaluate-linking
--resolve-abbreviations` runs; with a reranker it rereads each mention in its abstract).

The bi-encoder is a fast 0-layer cut of MiniLM (its embeddings, mean-pooled: no transformer
layer), exported ONNX int8, or `--encoder DIR` (e.g. a distilled student). The reranker starts
from the first `--layers` layers of the packaged MiniLM and trains on a seeded sample of both
corpora's train mentions (disease types), with the bi-encoder's top-5 wrong concepts of the
enriched MEDIC as negatives; its weight in `cosine + weight × score` is tuned (and early stopping
decided) on a seeded sample of `--max-dev` mentions of the two dev sets.

`--speed`: unique mentions/s of the pipeline (`sap_linker` over the gold spans of NCBI dev + train,
empty caches, best of 3 passes) with the reranker on: every mention, and the linker's default (the
mentions whose first candidate the reranker could overturn, `worth_reranking`); over `--index DIR` (a served index, e.g. `build-index --index-type HNSW32`) or
MEDIC + DO + train mentions in a `Flat` index; run it under `flock -x` so nothing else shares the CPU.

    python benchmarks/rerank.py --work /tmp/rerank_bench [--max-train 2000] [--layers 1] [--speed]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from report import add_data_arg, cpu_model, data_dir  # noqa: E402

DATA = data_dir()
DISEASE_TYPES = ["Disease", "SpecificDisease", "Modifier", "DiseaseClass", "CompositeMention"]
CORPORA = {  # name: (train, dev, types)
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
                     DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
                       DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"]),
}
MEDIC = DATA / "dictionaries" / "medic_06Jul2012.txt"
DOID = DATA / "kb" / "disease_ontology" / "doid.obo.gz"


def fast_encoder(work: Path, given: str | None):
    """The bi-encoder: `given`, or MiniLM's embeddings alone (0 layers), ONNX int8."""
    from spacy_el.sap.encoders import load_encoder

    if given:
        return load_encoder(given), given
    out = work / "encoder_L0_int8"
    if not out.exists():
        from spacy_el.models import minilm_dir
        from spacy_el.sap.distill import student_of
        from spacy_el.sap.encoder import SapEncoder
        from spacy_el.sap.onnx import OnnxEncoder

        OnnxEncoder.export(student_of(SapEncoder.load(minilm_dir(), device="cpu"), 0), out, quantize=True)
    return load_encoder(out), "0-layer cut of MiniLM (untrained), ONNX int8"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(parser)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rerank_bench"))
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--max-train", type=int, default=800)
    parser.add_argument("--max-dev", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bc5cdr-docs", type=int, default=100,
                        help="BC5CDR dev abstracts evaluated (a seeded sample; 0: all 500)")
    parser.add_argument("--prior", action="store_true",
                        help="rank with each corpus's train prior too (build-index --prior-from TRAIN; results_prior*.json)")
    parser.add_argument("--rerank-top-k", type=int, default=5,
                        help="candidates the reranker rescores in the evaluation (results_top{K}.json when not 5)")
    parser.add_argument("--listwise", action="store_true",
                        help="a listwise reranker (a mention's candidates in one input)")
    parser.add_argument("--train-top-k", type=int, default=5,
                        help="candidates per training group: the gold and the bi-encoder's wrong top-k")
    parser.add_argument("--candidate-tokens", type=int, default=16, help="with --listwise: tokens per candidate")
    parser.add_argument("--teacher", default=None, help="a trained reranker to distil into this one (soft targets)")
    parser.add_argument("--soft-weight", type=float, default=0.5, help="with --teacher: weight of its soft targets")
    parser.add_argument("--speed", action="store_true", help="only the speed run (needs a finished accuracy run)")
    parser.add_argument("--reranker", type=Path, default=None,
                        help="with --speed: the ONNX reranker to time (default WORK/reranker_int8)")
    parser.add_argument("--index", default=None,
                        help="with --speed: the served index to time over (built with --encoder; default: "
                             "MEDIC + DO + NCBI train mentions, Flat, built here)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.speed:
        speed(args)
        return
    accuracy(args)


def tables():
    from spacy_el.build import enrich_table, mention_alias_table
    from spacy_el.kb.readers import read_medic

    medic = read_medic(MEDIC)
    enriched, stats = enrich_table(medic, [DOID], "obo-xrefs")
    aliases = {name: mention_alias_table([train], types) for name, (train, _, types) in CORPORA.items()}
    return medic, enriched, stats[0], aliases


def indexes(encoder, medic, enriched, aliases, log):
    """The four dictionaries per corpus from one embedding pass over every distinct name."""
    import numpy as np

    from spacy_el.kb.index import ConceptIndex, _clean, _concat, align_alias_ids

    def full(table, extra):
        return _clean(table if extra is None else _concat(table, align_alias_ids(table, extra)))

    variants = {}
    for corpus, alias in aliases.items():
        for label, base in (("MEDIC", medic), ("MEDIC + DO", enriched)):
            variants[(corpus, label)] = full(base, None)
            variants[(corpus, label + " + train mentions")] = full(base, alias)
    texts = sorted({n for t in variants.values() for n in t.names})
    t0 = time.perf_counter()
    vecs = dict(zip(texts, encoder.embed(texts, batch_size=256)))
    log(f"embedded {len(texts)} distinct names in {time.perf_counter() - t0:.1f} s")
    return {key: ConceptIndex.from_vectors(t, np.stack([vecs[n] for n in t.names]), "Flat", encoder=encoder,
                                           use_gpu=False) for key, t in variants.items()}


def accuracy(args) -> None:
    from spacy_el.linker.link import evaluate_linking, query_texts
    from spacy_el.sap.rerank.cross_encoder import CrossEncoderReranker
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import export_onnx
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker
    from spacy_el.sap.config import TrainConfig

    started = time.time()
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    encoder, encoder_name = fast_encoder(args.work, args.encoder)
    medic, enriched, merge, aliases = tables()
    log(f"merge {merge.source}: {merge.n_names_added} names added to the concepts of {merge.n_terms_matched} of "
        f"{merge.n_terms} DO terms ({merge.n_names_known} already known); {merge.n_xrefs_unmatched} of "
        f"{merge.n_xrefs} MESH/OMIM xrefs matched no MEDIC concept; {merge.n_terms_without_xrefs} terms without one")
    idx = indexes(encoder, medic, enriched, aliases, log)
    if args.prior:  # cosine + 0.02 · log(1 + the concept's train mentions), before and after reranking
        from spacy_el.build import corpus_prior

        for (corpus, _), index in idx.items():
            train, _, types = CORPORA[corpus]
            index.set_prior(corpus_prior([train], types), [str(train)], weight=0.02)
        log("every dictionary + the corpus's train prior (weight 0.02)")

    reranker_dir = args.work / "reranker_run" / "reranker"
    t0 = time.perf_counter()
    if not reranker_dir.exists():
        config = TrainConfig(epochs=args.epochs, lr=args.lr, patience=1, warmup_steps=20, checkpoint_every=100,
                             seed=0)
        result = train_reranker([c[0] for c in CORPORA.values()], idx[("NCBI-disease", "MEDIC + DO")], encoder,
                                args.work / "reranker_run", dev=[c[1] for c in CORPORA.values()], types=DISEASE_TYPES,
                                layers=args.layers,
                                settings=RerankerSettings(max_length=args.max_length, window=args.window,
                                                          top_k=args.train_top_k,
                                                          listwise=args.listwise,
                                                          candidate_tokens=args.candidate_tokens),
                                config=config, batch_size=args.batch_size, max_train=args.max_train,
                                max_dev=args.max_dev, resume=True, num_threads=args.threads,
                                query_texts=lambda corpus, queries: query_texts(corpus, queries, True),
                                teacher=load_reranker(args.teacher, num_threads=args.threads) if args.teacher else None,
                                soft_weight=args.soft_weight)
        log(f"reranker: {result.n_train_groups} train mentions (sample of {result.n_train_mentions}), "
            f"{result.steps} steps, {time.perf_counter() - t0:.0f} s; dev-sample Acc@1 bi-encoder "
            f"{result.dev_bi_acc1:.2f} → reranked {result.dev_scores}; weight {result.weight}")
    served = args.work / "reranker_int8"
    if not served.exists():
        export_onnx(CrossEncoderReranker.load(reranker_dir), served, quantize=True)
    reranker = load_reranker(served, num_threads=args.threads)
    log(f"reranker weight {reranker.settings.weight}, {reranker.settings.layers} layer(s), served ONNX int8")

    rows = []
    devs = {name: dev for name, (_, dev, _) in CORPORA.items()}
    if args.bc5cdr_docs:
        devs["BC5CDR-disease"] = sample_docs(devs["BC5CDR-disease"], args.bc5cdr_docs, args.work)
        log(f"BC5CDR-disease dev: a seeded sample of {args.bc5cdr_docs} of its 500 abstracts ({devs['BC5CDR-disease']})")
    for corpus, (_, _, types) in CORPORA.items():
        dev = devs[corpus]
        for label in ("MEDIC", "MEDIC + DO", "MEDIC + train mentions", "MEDIC + DO + train mentions"):
            index = idx[(corpus, label)]
            plain = evaluate_linking(dev, encoder, index, types=types, resolve_abbreviations=True)
            t0 = time.perf_counter()
            rr = evaluate_linking(dev, encoder, index, types=types, resolve_abbreviations=True, reranker=reranker,
                                  rerank_top_k=args.rerank_top_k)
            secs = time.perf_counter() - t0
            rows.append((corpus, label, plain, rr))
            log(f"{corpus} | {label} | {plain['acc@1']:.2f} {plain['acc@5']:.2f} | reranked {rr['acc@1']:.2f} "
                f"{rr['acc@5']:.2f} ({rr['n']} queries, {secs:.0f} s)")
    table = ["| corpus (dev) | dictionary | Acc@1 | Acc@5 | Acc@1 reranked | Acc@5 reranked |", "|---|---|---|---|---|---|"]
    table += [f"| {c} | {lab} | {p['acc@1']:.2f} | {p['acc@5']:.2f} | {r['acc@1']:.2f} | {r['acc@5']:.2f} |"
              for c, lab, p, r in rows]
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "cpu": cpu_model(),
              "load": os.getloadavg(), "encoder": encoder_name, "args": {k: str(v) for k, v in vars(args).items()},
              "minutes": round((time.time() - started) / 60, 1), "log": lines, "table": table}
    name = ("results" + ("_prior" if args.prior else "") + (f"_top{args.rerank_top_k}" if args.rerank_top_k != 5 else "")
            + ".json")
    (args.work / name).write_text(json.dumps(report, indent=2))
    print("\n".join(table))
    print(json.dumps({k: report[k] for k in ("date", "cpu", "load", "encoder", "minutes")}))


def sample_docs(path: Path, n: int, work: Path) -> Path:
    """A seeded sample of `n` documents of a PubTator file (blank-line separated), kept in order."""
    import random

    docs = [d for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    keep = sorted(random.Random(0).sample(range(len(docs)), min(n, len(docs))))
    out = work / f"{path.stem}.sample{n}.txt"
    out.write_text("\n\n".join(docs[i].strip("\n") for i in keep) + "\n\n", encoding="utf-8")
    return out


def speed(args) -> None:
    """Unique mentions/s of `sap_linker` with the ONNX int8 reranker over the gold spans of NCBI-disease
    dev + train (empty mention caches, best of 3 passes, batches of 256 docs), bi-encoder alone, reranking every mention, and reranking the mentions it could overturn."""
    import copy
    import dataclasses

    import spacy

    from spacy_el.corpora.pubtator import read_pubtator
    from spacy_el.linker.link import pubtator_docs
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.policy import reach

    encoder, encoder_name = fast_encoder(args.work, args.encoder)
    if args.index:
        from spacy_el.kb.index import ConceptIndex

        index = ConceptIndex.load(args.index, encoder, use_gpu=False)
    else:
        medic, enriched, _, aliases = tables()
        index = indexes(encoder, medic, enriched, aliases, print)[("NCBI-disease", "MEDIC + DO + train mentions")]
    reranker = load_reranker(args.reranker or args.work / "reranker_int8", num_threads=args.threads)
    corpora = [read_pubtator(CORPORA["NCBI-disease"][1]), read_pubtator(CORPORA["NCBI-disease"][0])]
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "cpu": cpu_model(),
           "load_before": os.getloadavg(), "encoder": encoder_name, "threads": args.threads,
           "index": args.index or "MEDIC + DO + train mentions (Flat)", "index_type": index.meta["index_type"],
           "reranker": str(args.reranker or args.work / "reranker_int8"), "reach": reach(reranker.settings)}
    every = copy.copy(reranker)  # its score spread unknown: every mention goes to it
    every.settings = dataclasses.replace(reranker.settings, score_spread=None)
    settings = [("bi-encoder only", None, 5), ("reranker, every mention", every, 5),
                ("reranker, every mention, top 3", every, 3),
                ("reranker, default (mentions it could overturn), top 3", reranker, 3)]
    for label, used, top in settings:
        on = used is not None
        nlp = spacy.blank("en")
        linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, "rerank_top_k": top})
        linker.set_parts(encoder, index)
        if on:
            linker.reranker = used
        docs = [doc for corpus in corpora for doc, _ in pubtator_docs(nlp, corpus, with_ents=True, label="Disease")]
        unique = len({e.text for d in docs for e in d.ents})
        best = float("inf")
        for _ in range(3):
            linker.clear_cache()
            fresh = [d.copy() for d in docs]
            t0 = time.perf_counter()
            list(linker.pipe(fresh, batch_size=256))
            best = min(best, time.perf_counter() - t0)
        reranked = sum(1 for d in fresh for e in d.ents if e._.kb_candidates and e._.kb_candidates[0].rerank_score
                       is not None) if on else 0
        out[label] = {"reranked_mentions": reranked, "unique_mentions": unique, "mentions": sum(len(d.ents) for d in docs), "seconds": round(best, 2),
                      "unique_mentions_per_s": round(unique / best, 1)}
        print(label, out[label], flush=True)
    out["load_after"] = os.getloadavg()
    (args.work / "speed.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
