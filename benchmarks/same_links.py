"""Behaviour kept across a refactoring: the same links from this checkout and from an older
revision, on the real data of `benchmarks/corpus_linking.py` and `benchmarks/linker.py`.

    python benchmarks/same_links.py --old-rev REV --work /tmp/same_links [--layers 0] [--old-python OLD_VENV/bin/python]

Both code versions run the same steps in their own interpreter (the old one from `git archive
OLD_REV spacy_el` on `PYTHONPATH`), each with its own encoder code, index code and linker:

- an encoder: base MiniLM cut to its first `--layers` transformer layers (`distill.student_of`;
  0 by default, so MEDIC embeds in seconds; 6 is the full MiniLM of the benchmark tables), plus
  its int8 ONNX export;
- the MEDIC `Flat` index, with and without the corpus's train mentions as aliases, with and
  without the corpus prior; NCBI-disease dev and BC5CDR-disease dev linked by `evaluate_linking`
  with and without abbreviation resolution (the 16 rows of a corpus_linking encoder);
- every dev query's top-5 concepts and cosines from `ConceptIndex.search`;
- `sap_linker` through `nlp.pipe` on the gold spans of NCBI-disease dev + train (MEDIC + train
  aliases + prior, threshold 0, composite splitting off);
- the torch and ONNX vectors of 2,000 MEDIC names.

The report lists, per part, whether the two versions agree (equal Acc@k, equal concept ids,
cosines within 1e-5). Which encoder is cut does not matter for the comparison: every ranking,
tie, prior and alias path runs on MEDIC's real names and the corpora's real mentions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import add_data_arg, data_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = data_dir()
CORPORA = {  # name: (train, dev, types), as benchmarks/corpus_linking.py
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
                     DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
                       DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"]),
}
MEDIC = DATA / "dictionaries" / "medic_06Jul2012.txt"


def run_side(out: Path, layers: int, work: Path) -> None:
    """Everything one code version computes (whichever `spacy_el` is importable)."""
    import numpy as np
    import spacy
    import torch

    import spacy_el
    from spacy_el.corpora.pubtator import linking_queries, read_pubtator
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.readers import read_medic
    import spacy_el.linker.pipe  # noqa: F401 - registers sap_linker from this side's code
    from spacy_el.linker.link import evaluate_linking, pubtator_docs, query_texts
    from spacy_el.models import minilm_dir
    from spacy_el.sap.distill import student_of
    from spacy_el.sap.encoder import SapEncoder
    from spacy_el.sap.onnx import OnnxEncoder
    from spacy_el.build import corpus_prior, mention_alias_table

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    res: dict = {"spacy_el": str(Path(spacy_el.__file__).parent), "rows": {}, "search": {}}
    medic = read_medic(MEDIC)
    full = SapEncoder.load(minilm_dir(), device="cpu", num_threads=2)
    encoder = full if layers >= 6 else student_of(full, layers)
    sample = medic.names[:2000]
    res["torch_vectors"] = encoder.embed(sample).tolist()
    onnx_dir = work / f"onnx_{out.stem}"
    onnx = OnnxEncoder.export(encoder, onnx_dir, quantize=True)
    res["onnx_vectors"] = onnx.embed(sample).tolist()
    plain = ConceptIndex.build(medic, encoder, "Flat", batch_size=256, use_gpu=False)
    vectors = plain.cpu_index.reconstruct_n(0, plain.cpu_index.ntotal)
    for corpus_name, (train, dev, types) in CORPORA.items():
        with_aliases = ConceptIndex.from_vectors(plain.table, vectors, "Flat", encoder=encoder, use_gpu=False)
        with_aliases.add_aliases(mention_alias_table([train], types), encoder)
        prior = corpus_prior([train], types)
        corpus = read_pubtator(dev, types=types)
        queries = linking_queries(corpus)
        texts = list(dict.fromkeys(query_texts(corpus, queries, False) + query_texts(corpus, queries, True)))
        query_vectors = encoder.embed(texts)
        for protocol, index in (("MEDIC", plain), ("MEDIC + train mentions", with_aliases)):
            index.set_prior(prior, [train])
            for weight in (0.0, 0.02):
                index.set_prior_weight(weight)
                key = f"{corpus_name}|{protocol}{' + prior' if weight else ''}"
                for abbr in (False, True):
                    scores = evaluate_linking(dev, encoder, index, types=types, resolve_abbreviations=abbr)
                    res["rows"][f"{key}|{'abbr' if abbr else 'plain'}"] = {
                        k: scores[k] for k in ("acc@1", "acc@5", "n", "n_missing_from_kb")}
                found = index.search(query_vectors, k=5)
                res["search"][key] = {t: [[c.concept_id, c.score, c.name, c.source] for c in cands]
                                      for t, cands in zip(texts, found)}
        print(f"[{time.strftime('%H:%M:%S')}] {corpus_name} done", file=sys.stderr, flush=True)
    # the pipeline: MEDIC + NCBI train aliases + prior, gold spans of NCBI dev + train
    train, dev, _ = CORPORA["NCBI-disease"]
    index = ConceptIndex.from_vectors(plain.table, vectors, "Flat", encoder=encoder, use_gpu=False)
    index.add_aliases(mention_alias_table([train]), encoder)
    index.set_prior(corpus_prior([train]), [train], 0.02)
    nlp = spacy.blank("en")
    config = {"threshold": 0.0, "top_k": 5, "batch_size": 64, "composite": False}
    linker = nlp.add_pipe("sap_linker", config=config)
    linker.initialize(encoder_loader=lambda: encoder, index_loader=lambda enc: index)
    docs = [doc for path in (dev, train) for doc, _ in pubtator_docs(nlp, read_pubtator(path), with_ents=True)]
    res["pipeline"] = [[(e.text, e.kb_id_, [[c[0], float(c[1])] for c in e._.kb_candidates]) for e in d.ents]
                       for d in nlp.pipe(docs, batch_size=64)]
    res["seconds"] = time.perf_counter() - t0
    out.write_text(json.dumps(res))
    np.save(out.with_suffix(".npy"), np.zeros(1))  # marks a finished side


def compare(old: dict, new: dict) -> list[tuple[str, bool, str]]:
    """(part, agree, detail) per part of the two sides' results."""
    import numpy as np

    out = []
    for part in ("torch_vectors", "onnx_vectors"):
        diff = float(np.abs(np.array(old[part]) - np.array(new[part])).max())
        out.append((part, diff <= 1e-5, f"max |Δ| {diff:.2e} over {len(new[part])} MEDIC names"))
    rows_same = old["rows"] == new["rows"]
    out.append(("evaluate_linking rows", rows_same, f"{len(new['rows'])} rows (Acc@1, Acc@5, n, absent) "
                + ("identical" if rows_same else "differ: " + ", ".join(
                    k for k in new["rows"] if old["rows"].get(k) != new["rows"][k]))))
    n_queries = n_bad = 0
    worst = 0.0
    for key, found in new["search"].items():
        for text, cands in found.items():
            n_queries += 1
            before = old["search"][key][text]
            ids_same = [c[0] for c in cands] == [c[0] for c in before]
            if ids_same:
                worst = max([worst] + [abs(a[1] - b[1]) for a, b in zip(cands, before)])
            n_bad += not ids_same
    out.append(("ConceptIndex.search top-5", n_bad == 0 and worst <= 1e-5,
                f"{n_queries} (setting, query) pairs, {n_bad} with other concept ids, max |Δcos| {worst:.2e}"))
    ents = [(a, b) for da, db in zip(old["pipeline"], new["pipeline"]) for a, b in zip(da, db)]
    links_same = len(old["pipeline"]) == len(new["pipeline"]) and all(a[:2] == b[:2] for a, b in ents)
    cands_same = all([c[0] for c in a[2]] == [c[0] for c in b[2]] for a, b in ents)
    worst = max((abs(x[1] - y[1]) for a, b in ents for x, y in zip(a[2], b[2])), default=0.0)
    out.append(("sap_linker nlp.pipe", links_same and cands_same and worst <= 1e-5,
                f"{len(new['pipeline'])} docs, {len(ents)} entities: kb_id {'equal' if links_same else 'differ'}, "
                f"candidate ids {'equal' if cands_same else 'differ'}, max |Δcos| {worst:.2e}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arg(ap)
    ap.add_argument("--old-rev", help="the revision to compare with (before the refactoring); required")
    ap.add_argument("--work", type=Path, default=Path("/tmp/same_links"))
    ap.add_argument("--layers", type=int, default=0, help="MiniLM layers kept (6: the full encoder)")
    ap.add_argument("--old-python", default=sys.executable,
                    help="interpreter of an install of the old revision: spaCy loads every installed factory's entry "
                         "point, so the old code needs an environment whose entry points name its own modules")
    ap.add_argument("--side", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side is not None:
        run_side(args.side, args.layers, args.work)
        return
    if not args.old_rev:
        ap.error("give --old-rev REV, the revision to compare with")
    args.work.mkdir(parents=True, exist_ok=True)
    old_src = args.work / f"src_{args.old_rev}"
    if not (old_src / "spacy_el").is_dir():
        old_src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old_rev, "spacy_el"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
    results = {}
    for label, pythonpath, python in (("old", str(old_src), args.old_python), ("new", str(ROOT), sys.executable)):
        out = args.work / f"{label}_L{args.layers}.json"
        if not out.with_suffix(".npy").exists():
            env = dict(os.environ, PYTHONPATH=pythonpath)
            subprocess.run([python, __file__, "--side", str(out), "--layers", str(args.layers),
                            "--work", str(args.work), "--data", str(args.data)], check=True, env=env, cwd=args.work)
        results[label] = json.loads(out.read_text())
        print(f"{label}: spacy_el from {results[label]['spacy_el']}, {results[label]['seconds']:.0f} s", flush=True)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    print(f"\n`python benchmarks/same_links.py --old-rev {args.old_rev} --layers {args.layers}`: "
          f"{args.old_rev} against {rev}\n")
    print("| part | same | detail |\n|---|---|---|")
    for part, same, detail in compare(results["old"], results["new"]):
        print(f"| {part} | {'yes' if same else '**no**'} | {detail} |")
    print("\n| row | Acc@1 old | Acc@1 new | Acc@5 old | Acc@5 new |\n|---|---:|---:|---:|---:|")
    for key, row in results["new"]["rows"].items():
        before = results["old"]["rows"][key]
        print(f"| {key.replace('|', ', ')} | {before['acc@1']:.2f} | {row['acc@1']:.2f} | "
              f"{before['acc@5']:.2f} | {row['acc@5']:.2f} |")


if __name__ == "__main__":
    main()
