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
   with the reranker (ONNX int8), both through `spacy_el.linker.link.evaluate_linking`: reranking
   every mention, the linker's default (only mentions whose first candidate the reranker could
   overturn, `worth_reranking`: the same links when its dev score spread holds) and near-ties.

With `--aliases` the served index holds the train mentions as aliases (SapBERT's protocol) and so
does each fold's index (its own train folds' mentions), in `reranker_aliases`. `--layers 6` keeps
all of MiniLM's layers (the served reranker keeps 1, for speed); `--teacher DIR` distils a trained
reranker (e.g. that 6-layer one) into the new one; each setting gets its own output directory.

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
#: the listwise reranker of the earlier sessions' runs (its layers, epochs and threads: the options below)
RERANKER = ["--listwise", "--lr", "8e-5", "--max-length", "100", "--window", "60",
            "--candidate-tokens", "12", "--top-k", "5", "--resolve-abbreviations"]



def reading_every_mention(reranker):
    """The reranker with its score spread unknown, so that `worth_reranking` sends it every mention."""
    import copy
    import dataclasses

    every = copy.copy(reranker)
    every.settings = dataclasses.replace(reranker.settings, score_spread=None)
    return every

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
    parser.add_argument("--aliases", action="store_true",
                        help="The served index holds the train mentions as aliases: so do the fold indexes (their "
                             "own train folds'), and the reranker is trained for that index (OUT/reranker_aliases)")
    parser.add_argument("--types", nargs="*", default=[], help="Mention types to use (e.g. Disease for BC5CDR)")
    parser.add_argument("--layers", type=int, default=1,
                        help="MiniLM layers the reranker keeps (1: the served, fast one; more: OUT/reranker*_L<n>)")
    parser.add_argument("--threads", type=int, default=1, help="Threads for the reranker's training")
    parser.add_argument("--epochs", type=int, default=3,
                        help="The reranker's epochs at most (dev early stopping, patience 1): other than 3, OUT/…_e<n>")
    parser.add_argument("--teacher", help="A trained reranker whose scores the new one also learns (distillation, "
                                          "soft weight 0.5): OUT/reranker*_distilled")
    args = parser.parse_args()
    work = args.work
    tag = "_aliases" if args.aliases else ""
    reranker_tag = (tag + (f"_L{args.layers}" if args.layers != 1 else "") + (f"_e{args.epochs}" if args.epochs != 3 else "")
                    + ("_distilled" if args.teacher else ""))
    reranker_settings = [*RERANKER, "--layers", str(args.layers), "--epochs", str(args.epochs),
                         "--num-threads", str(args.threads),
                         *(["--teacher", args.teacher, "--soft-weight", "0.5"] if args.teacher else [])]
    types = [x for t in args.types for x in ("--types", t)]
    if not (work / "folds" / f"fold{args.folds - 1}" / "train.txt").exists():
        run("split-folds", args.train, str(work / "folds"), "--folds", str(args.folds))
    fold_args = []
    for i in range(args.folds):
        fold = work / "folds" / f"fold{i}"
        if not (fold / "ft" / "encoder").exists():
            run("finetune", str(fold / "train.txt"), args.kb, args.start, str(fold / "ft"), *FINETUNE, *types)
        if not (fold / "int8").exists():
            run("export-onnx", str(fold / "ft" / "encoder"), str(fold / "int8"), "--quantize")
        if not (fold / f"index{tag}").exists():
            aliases = ["--add-mentions", str(fold / "train.txt")] if args.aliases else []
            run("build-index", args.kb, str(fold / "int8"), str(fold / f"index{tag}"), "--format", "medic",
                "--prior-from", str(fold / "train.txt"), *aliases,
                *[x for t in args.types for x in ("--mention-types", t)])
        fold_args += [str(fold / "heldout.txt")]
    folds = [work / "folds" / f"fold{i}" for i in range(args.folds)]
    reranker_dir = work / f"reranker{reranker_tag}"
    if not (reranker_dir / "reranker").exists():
        run("train-reranker", *fold_args, "--encoder", args.encoder, "--index", args.index, *types,
            *[x for f in folds for x in ("--fold-encoder", str(f / "int8"), "--fold-index", str(f / f"index{tag}"))],
            "--dev", args.dev, "--max-dev", str(args.max_dev), "--output", str(reranker_dir), *reranker_settings)
    served = work / f"reranker{reranker_tag}_int8"
    if not served.exists():
        run("export-reranker", str(reranker_dir / "reranker"), str(served))

    from spacy_el.kb.index import ConceptIndex
    from spacy_el.linker.link import evaluate_linking
    from spacy_el.sap.encoders import load_encoder
    from spacy_el.sap.rerank.model import load_reranker

    encoder = load_encoder(args.encoder)
    index = ConceptIndex.load(args.index, encoder)
    reranker = load_reranker(served, num_threads=1)
    kw = dict(resolve_abbreviations=True, types=args.types or None)
    scores = {"bi-encoder": evaluate_linking(args.dev, encoder, index, **kw)}
    every = reading_every_mention(reranker)
    for k in (3, 5):  # every mention, and the linker's default
        scores[f"reranked top {k}"] = evaluate_linking(args.dev, encoder, index, reranker=every, rerank_top_k=k, **kw)
        scores[f"reranked top {k}, default (mentions it could overturn)"] = evaluate_linking(
            args.dev, encoder, index, reranker=reranker, rerank_top_k=k, **kw)
    result = {"weight": reranker.settings.weight,
              **{name: {key: s[key] for key in ("acc@1", "acc@5", "n", "n_reranked")} for name, s in scores.items()}}
    (work / f"scores{reranker_tag}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
