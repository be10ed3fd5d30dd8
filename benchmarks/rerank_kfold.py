"""A reranker trained by cross-fitting (issue 16): the candidates it learns from come from encoders
that have not seen those mentions, as the served linker's candidates for new text have not.

A reranker for a *fine-tuned* encoder cannot learn from that encoder's candidates for its own train
mentions: it has been trained to rank their gold first (eighth session: weight tuned to 0). So:

1. `spacy-el split-folds TRAIN` cuts the train corpus into K document folds;
2. per fold, `spacy-el finetune` the same start encoder on the other folds (the served encoder's
   settings), export it int8 and index KB + prior of those folds;
3. `spacy-el train-reranker` on the K held-out files, each with `--fold-encoder/--fold-index` of
   the fold that did not see it; dev candidates (weight tuning) come from the served linker;
4. the served linker (encoder fine-tuned on all of TRAIN, its index) scored on dev without and
   with the reranker (ONNX int8), both through `spacy_el.linker.link.evaluate_linking`.

Every step is skipped when its output exists, so a killed run resumes. CPU figures (accuracy only).

    python benchmarks/rerank_kfold.py --train NCBItrainset_corpus.txt --dev NCBIdevelopset_corpus.txt \
        --kb medic_06Jul2012.txt --start training/pretrain/encoder --encoder ft_ncbi_int8 --index idx_ft_ncbi_int8 \
        --work /tmp/kfold
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: the served encoder's fine-tuning settings (eighth session's NCBI-only encoder)
FINETUNE = ["--format", "medic", "--epochs", "3", "--batch-size", "32", "--lr", "5e-5", "--negatives", "3",
            "--loss", "ntxent", "--seed", "0", "--resume", "--num-threads", "1"]
#: the 1-layer listwise reranker of the earlier sessions' runs
RERANKER = ["--layers", "1", "--listwise", "--epochs", "3", "--lr", "8e-5", "--max-length", "100", "--window", "60",
            "--candidate-tokens", "12", "--top-k", "5", "--resolve-abbreviations", "--num-threads", "1"]


def run(*args: str) -> None:
    print("$ spacy-el", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "spacy_el", *args], check=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="PubTator train corpus (the served encoder's)")
    parser.add_argument("--dev", required=True, help="PubTator dev corpus (weight tuning and the scores)")
    parser.add_argument("--kb", required=True, help="MEDIC file")
    parser.add_argument("--start", required=True, help="Encoder the served one was fine-tuned from")
    parser.add_argument("--encoder", required=True, help="The served encoder (fine-tuned on all of --train)")
    parser.add_argument("--index", required=True, help="The served index (KB + --train prior)")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-dev", type=int, default=0, help="Tune the weight on a sample of dev (0: all)")
    args = parser.parse_args()
    work = args.work
    if not (work / "folds" / f"fold{args.folds - 1}" / "train.txt").exists():
        run("split-folds", args.train, str(work / "folds"), "--folds", str(args.folds))
    fold_args = []
    for i in range(args.folds):
        fold = work / "folds" / f"fold{i}"
        if not (fold / "ft" / "encoder").exists():
            run("finetune", str(fold / "train.txt"), args.kb, args.start, str(fold / "ft"), *FINETUNE)
        if not (fold / "int8").exists():
            run("export-onnx", str(fold / "ft" / "encoder"), str(fold / "int8"), "--quantize")
        if not (fold / "index").exists():
            run("build-index", args.kb, str(fold / "int8"), str(fold / "index"), "--format", "medic",
                "--prior-from", str(fold / "train.txt"))
        fold_args += [str(fold / "heldout.txt")]
    folds = [work / "folds" / f"fold{i}" for i in range(args.folds)]
    if not (work / "reranker" / "reranker").exists():
        run("train-reranker", *fold_args, "--encoder", args.encoder, "--index", args.index,
            *[x for f in folds for x in ("--fold-encoder", str(f / "int8"), "--fold-index", str(f / "index"))],
            "--dev", args.dev, "--max-dev", str(args.max_dev), "--output", str(work / "reranker"), *RERANKER)
    if not (work / "reranker_int8").exists():
        run("export-reranker", str(work / "reranker" / "reranker"), str(work / "reranker_int8"))

    from spacy_el.kb.index import ConceptIndex
    from spacy_el.linker.link import evaluate_linking
    from spacy_el.sap.encoders import load_encoder
    from spacy_el.sap.rerank.model import load_reranker

    encoder = load_encoder(args.encoder)
    index = ConceptIndex.load(args.index, encoder)
    reranker = load_reranker(work / "reranker_int8", num_threads=1)
    scores = {"bi-encoder": evaluate_linking(args.dev, encoder, index, resolve_abbreviations=True)}
    for k in (3, 5):
        scores[f"reranked top {k}"] = evaluate_linking(args.dev, encoder, index, resolve_abbreviations=True,
                                                       reranker=reranker, rerank_top_k=k)
    result = {"weight": reranker.settings.weight, **{name: str(s) for name, s in scores.items()}}
    (work / "scores.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
