"""Linker benchmark: NCBI-disease dev Acc@1/@5 against MEDIC for a Flat index and compressed
FAISS indexes (bytes per name, Acc@1 delta), index build names/s, cold pipeline load time,
linking throughput through `nlp.pipe`, and scispaCy's TF-IDF linker on the same KB and mentions.

    python benchmarks/linker.py --work /tmp/linker_bench [--sap-encoder DIR] [--distill-layers 0]
        [--pipeline-index HNSW32 "HNSW32@ef_search=64" IVF256,PQ96] [--write-results]

- Acc@k: `spacy_el.linker.link.evaluate_linking` (the `evaluate-linking` code), SapBERT protocol.
- Encoders: base MiniLM in torch (fp32), the same exported to ONNX Runtime with int8 weights
  (`spacy-el export-onnx --quantize`, the serving runtime), `--sap-encoder`'s int8 export and
  the int8 exports of `--student` encoders (`spacy-el distill` of the base MiniLM).
- Throughput: NCBI-disease dev + train abstracts as spaCy docs with the *gold* mention spans set
  as `doc.ents` (NER cost excluded), linked by `sap_linker` through `nlp.pipe` with an empty
  mention cache; unique mentions/s counts distinct mention strings (each embedded once).
- Cold load: fresh `python -c 'spacy.load(...)'` subprocesses of a saved pipeline that carries the
  encoder and the MEDIC index: `import spacy`, `spacy.load`, and the first linked entity, timed apart.
- scispaCy: `benchmarks/linker_scispacy.py` in its own venv (`--scispacy-python`), built from
  the same MEDIC names, run on the same unique mention strings, at efSearch 200 (what scispaCy
  sets when it loads an index) and 10 (what a fresh build leaves); the ratio uses the faster.
Embedded MEDIC vectors are kept in the work directory (one Flat index per encoder), so a rerun
skips the slowest step and reports the build speed recorded when it was built.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import spacy
import torch

from spacy_el.corpora.pubtator import linking_queries, read_pubtator
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.readers import read_kb
from spacy_el.linker.link import evaluate_linking, pubtator_docs
from spacy_el.models import minilm_dir
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.onnx import OnnxEncoder

from report import add_data_arg, data_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = data_dir()
SECTION = "## Linker"
#: ≤ 128 bytes per name candidates first, then faster-but-bigger ones.
INDEX_TYPES = ["HNSW32", "IVF256,PQ48,RFlat", "IVF256,PQ96", "PQ96", "PCA128,SQ8", "PCA256,SQ4"]


class CachedEncoder:
    """An encoder whose vectors for the benchmark's queries are computed once and reused by every
    index type (same fingerprint and dim, so the index checks still apply)."""

    def __init__(self, encoder: SapEncoder, texts: list[str]):
        self.encoder, self.dim, self.fingerprint, self.settings = encoder, encoder.dim, encoder.fingerprint, encoder.settings
        t0 = time.perf_counter()
        self.vectors = dict(zip(texts, encoder.embed(texts)))
        self.seconds = time.perf_counter() - t0

    def embed(self, texts, batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def flat_index(label: str, encoder: SapEncoder, table, work: Path) -> ConceptIndex:
    path = work / f"index_{label}_Flat"
    if path.exists():
        try:
            return ConceptIndex.load(path, encoder, mmap=False)
        except Exception as err:  # built by another encoder version: rebuild
            print(f"rebuilding {path}: {err}", file=sys.stderr)
    index = ConceptIndex.build(table, encoder, "Flat", batch_size=64, use_gpu=False, show_progress=True)
    index.save(path)
    return index


def onnx_encoder(encoder: SapEncoder, path: Path, threads: int) -> OnnxEncoder:
    """The encoder exported to ONNX with int8 weights (reused from an earlier run when the
    source fingerprint matches)."""
    meta = path / "sap_encoder.json"
    if not (meta.exists() and json.loads(meta.read_text()).get("source_fingerprint") == encoder.fingerprint):
        OnnxEncoder.export(encoder, path, quantize=True)
    return OnnxEncoder.load(path, device="cpu", num_threads=threads)


def bytes_per_name(index: ConceptIndex, work: Path, label: str, index_type: str) -> tuple[float, Path]:
    path = work / f"index_{label}_{index_type.replace(',', '_')}"
    index.save(path)
    return os.path.getsize(path / "index.faiss") / len(index), path


COLD = """
import resource, sys, time
t0 = time.perf_counter()
import spacy
t1 = time.perf_counter()
nlp = spacy.load(PIPELINE)
t2 = time.perf_counter()
doc = nlp.make_doc(TEXT)
doc.ents = [doc.char_span(0, 30, label="Disease")]
doc = nlp.get_pipe("sap_linker")(doc)
assert doc.ents[0].kb_id_
t3 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, t2 - t1, t3 - t0, ru.ru_utime + ru.ru_stime, int("transformers" in sys.modules))
"""


def cold_load(pipeline: Path, text: str, repeats: int = 3) -> dict:
    """A fresh interpreter each time: `import spacy` (torch comes with thinc), `spacy.load`
    (encoder + memory-mapped index), first linked doc. The median of `repeats` runs."""
    code = COLD.replace("PIPELINE", repr(str(pipeline))).replace("TEXT", repr(text))
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(list(map(float, out.stdout.split())))
    spacy_s, load_s, first_s, cpu_s, transformers = np.median(np.array(runs), axis=0)
    return {"import_spacy_s": spacy_s, "load_s": load_s, "first_doc_total_s": first_s, "cpu_s": cpu_s,
            "imports_transformers": bool(transformers), "repeats": repeats}


def throughput(nlp, pairs) -> dict:
    """Link every gold span of the docs through nlp.pipe, cold cache; entities/s and unique/s,
    per wall second and per CPU second of this process (the machine is shared)."""
    linker = nlp.get_pipe("sap_linker")
    linker.clear_cache()
    docs = [doc.copy() for doc, _ in pairs]
    n_ents = sum(len(d.ents) for d in docs)
    unique = len({e.text for d in docs for e in d.ents})
    t0, c0 = time.perf_counter(), time.process_time()
    list(nlp.pipe(docs, batch_size=64))
    s, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"docs": len(docs), "entities": n_ents, "unique_mentions": unique, "seconds": s, "cpu_seconds": cpu,
            "entities_per_s": n_ents / s, "unique_per_s": unique / s, "unique_per_cpu_s": unique / cpu}


def pipeline_spec(spec: str) -> tuple[str, dict]:
    """`HNSW32@ef_search=64` → ("HNSW32", {"ef_search": 64}): an index type and search settings."""
    index_type, _, settings = spec.partition("@")
    return index_type, {k: int(v) for k, v in (kv.split("=") for kv in settings.split(";") if kv)}


def accuracy_row(rows: list[dict], spec: str) -> dict:
    """The Acc@k row of a pipeline spec: its index type with its search settings (or the defaults)."""
    index_type, settings = pipeline_spec(spec.removesuffix(", name_lookup off"))
    same_type = [r for r in rows if r["index_type"] == index_type]
    return next((r for r in same_type if settings and all(r["settings"].get(k) == v for k, v in settings.items())),
                same_type[0])


def run_encoder(label: str, encoder, args, table, dev_texts: list[str], pairs) -> dict:
    """Acc@k per index type, then pipelines (Flat and `--pipeline-index`) saved, reloaded and
    timed: throughput through nlp.pipe and a cold load of the fast one."""
    flat = flat_index(label, encoder, table, args.work)
    build = flat.meta["build"]
    cached = CachedEncoder(encoder, dev_texts)
    rows = []
    names = flat.cpu_index.reconstruct_n(0, len(flat))
    base_acc = None
    paths = {"Flat": args.work / f"index_{label}_Flat"}
    for index_type in ["Flat", *args.index_types]:
        t0 = time.perf_counter()
        index = flat if index_type == "Flat" else ConceptIndex.from_vectors(
            flat.table, names, index_type, encoder=encoder, use_gpu=False)
        train_s = time.perf_counter() - t0
        size, paths[index_type] = bytes_per_name(index, args.work, label, index_type)
        # the defaults, then other search depths where the type has a depth setting
        depths = [{"nprobe": 64}] if "IVF" in index_type else \
            [{"ef_search": 64}, {"ef_search": 512}] if "HNSW" in index_type else []
        for overrides in [{}, *depths]:
            index = ConceptIndex.load(paths[index_type], cached, **overrides)
            t0 = time.perf_counter()
            scores = evaluate_linking(args.dev, cached, index)
            search_s = time.perf_counter() - t0
            base_acc = scores["acc@1"] if base_acc is None else base_acc
            rows.append({"index_type": index_type, "bytes_per_name": size, "acc@1": scores["acc@1"],
                         "acc@5": scores["acc@5"], "delta_acc@1": scores["acc@1"] - base_acc,
                         "train_add_s": train_s, "search_ms_per_query": 1000 * search_s / len(dev_texts),
                         "settings": index.meta["settings"], "n": scores["n"],
                         "missing": scores["n_missing_from_kb"]})
            print(f"[{label}] {rows[-1]}", file=sys.stderr)
    speed, cold = {}, None
    for spec in dict.fromkeys(["Flat", *args.pipeline_index]):
        index_type, settings = pipeline_spec(spec)
        if index_type not in paths:
            continue
        # a blank tokenizer + sap_linker, saved with its encoder and index inside, then reloaded
        nlp = spacy.blank("en")
        nlp.add_pipe("sap_linker", config={"top_k": 5, "batch_size": args.batch_size})
        nlp.get_pipe("sap_linker").initialize(
            encoder_loader=lambda: encoder,
            index_loader=lambda enc: ConceptIndex.load(paths[index_type], enc, **settings))
        pipeline = args.work / f"pipeline_{label}_{spec.replace(',', '_').replace('@', '_')}".replace(" ", "_")
        nlp.to_disk(pipeline)
        for lookup in (True, False):  # name_lookup only acts on indexes that store exact vectors
            if not lookup and spec not in args.pipeline_index:
                continue
            nlp = spacy.load(pipeline, config={"components": {"sap_linker": {"performance": {"name_lookup": lookup}}}})
            key = spec if lookup else f"{spec}, name_lookup off"
            with nlp.select_pipes(enable=["sap_linker"]):
                speed[key] = max((throughput(nlp, pairs) for _ in range(3)), key=lambda r: r["unique_per_s"])
            print(f"[{label}] throughput {key} {speed[key]}", file=sys.stderr)
    cold = cold_load(pipeline, "Familial adenomatous polyposis is a cancer.") | {"index_type": spec}
    return {"label": label, "encoder": str(getattr(encoder, "directory", None) or encoder.settings.base),
            "runtime": getattr(encoder, "runtime", "torch"), "quantize": encoder.settings.quantize,
            "dim": encoder.dim, "pooling": encoder.settings.pooling, "build": build,
            "query_embed_s": cached.seconds, "n_queries": len(dev_texts), "rows": rows, "speed": speed, "cold": cold}


def distilled_student(args, layers: int) -> Path:
    """`spacy-el distill` of the base encoder on MEDIC's names and the NCBI-disease *train* mention
    texts (no labels, no dev data; the last epoch is kept), done once per work directory."""
    from spacy_el.sap.distill import distill
    from spacy_el.sap.config import TrainConfig

    out = args.work / f"student_L{layers}"
    if not (out / "distill.json").exists():
        distill(args.base_encoder, args.medic, out, layers=layers, kb_format="medic",
                corpora=[DATA / "ncbi_disease" / "NCBItrainset_corpus.txt"],
                config=TrainConfig(epochs=args.distill_epochs, lr=args.distill_lr), batch_size=256, resume=True,
                encoder_options={"device": "cpu", "num_threads": args.threads})
    return out / "encoder"


def scispacy_peer(args, table, dev_texts: list[str], pairs) -> dict | None:
    """Run benchmarks/linker_scispacy.py with scispaCy's venv python on the same KB and mentions."""
    kb = args.work / "medic_scispacy.jsonl"
    names: dict[str, list[str]] = {}
    for cid, name, _ in table.rows():
        names.setdefault(cid, []).append(name)
    with kb.open("w") as f:
        for cid, ns in names.items():
            f.write(json.dumps({"concept_id": cid, "canonical_name": ns[0], "aliases": ns[1:]}) + "\n")
    mentions = args.work / "mentions.json"
    mentions.write_text(json.dumps({"dev": dev_texts, "docs": [[e.text for e in doc.ents] for doc, _ in pairs]}))
    out = args.work / "scispacy.json"
    cmd = [args.scispacy_python, str(HERE / "linker_scispacy.py"), "--kb", str(kb), "--mentions", str(mentions),
           "--work", str(args.work / "scispacy_index"), "--out", str(out)]
    print("running", " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    result = json.loads(out.read_text())
    from spacy_el.evaluate import accuracy_at_k

    queries = linking_queries(read_pubtator(args.dev))
    for run in result["runs"]:
        ranked = run.pop("ranked")
        run["scores"] = accuracy_at_k([ranked[q.text] for q in queries], [q.gold for q in queries], ks=(1, 5))
    return result


def markdown(args, results: list[dict], peer: dict | None, wall_s: float) -> str:
    lines = [SECTION, "",
             f"`python benchmarks/linker.py --work {args.work} --index-types {' '.join(args.index_types)} "
             f"--pipeline-index {' '.join(args.pipeline_index)}"
             + (f" --sap-encoder {args.sap_encoder}" if args.sap_encoder else "")
             + (f" --distill-layers {' '.join(map(str, args.distill_layers))} --distill-epochs "
                f"{args.distill_epochs} --distill-lr {args.distill_lr}" if args.distill_layers else "")
             + (f" --student {' '.join(map(str, args.student[len(args.distill_layers):]))}"
                if len(args.student) > len(args.distill_layers) else "")
             + "` — " + f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU (CPU figures only); "
             f"load average {args.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; torch threads "
             f"{torch.get_num_threads()}, ONNX Runtime threads {args.threads}, faiss {faiss.__version__}; "
             f"wall time {wall_s / 60:.1f} min.", "",
             "KB: MEDIC 06Jul2012 (BioSyn's copy), "
             f"{results[0]['rows'][0]['n']} NCBI-disease dev queries (SapBERT protocol; "
             f"{results[0]['rows'][0]['missing']} with gold ids absent from MEDIC stay in the denominator).", ""]
    for res in results:
        b = res["build"]
        runtime = "ONNX Runtime, int8 weights" if res["runtime"] == "onnx" and res["quantize"] else \
            "ONNX Runtime, fp32" if res["runtime"] == "onnx" else "torch, fp32"
        lines += [f"### {res['label']} ({runtime}; {res['pooling']} pooling, dim {res['dim']})", "",
                  f"Index build (embedding every MEDIC name + FAISS): {b.get('names_per_second', float('nan')):.0f} names/s "
                  f"({b.get('seconds', float('nan')):.0f} s in all, {b.get('embed_seconds', float('nan')):.0f} s of "
                  "it embedding).", ""]
        if res.get("distill"):
            d = res["distill"]
            lines += [f"Distilled from base MiniLM (`spacy-el distill --layers {d['layers']}`): {d['n_texts']} texts "
                      f"(MEDIC names + NCBI-disease train mention texts, no labels), {d['steps']} steps, final loss "
                      f"{d['final_loss']:.4f}, {d.get('seconds', float('nan')) / 60:.1f} min of training.", ""]
        lines += ["| index type | bytes/name | Acc@1 | Acc@5 | ΔAcc@1 vs Flat | train+add s | eval ms/query | search settings |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in res["rows"]:
            lines.append(f"| `{r['index_type']}` | {r['bytes_per_name']:.0f} | {r['acc@1']:.2f} | {r['acc@5']:.2f} | "
                         f"{r['delta_acc@1']:+.2f} | {r['train_add_s']:.1f} | {r['search_ms_per_query']:.2f} | "
                         f"{json.dumps(r['settings'])} |")
        lines += ["", "Linking through `nlp.pipe` (gold spans of NCBI-disease dev+train abstracts as `doc.ents`, NER "
                      "excluded, empty mention cache, best of 3 passes; `name_lookup` on unless said: mentions that are "
                      "MEDIC names take the stored vector, which only `Flat`/`HNSW` indexes keep):", "",
                  "| pipeline index | docs | entities | unique mentions | wall s | **unique mentions/s** | entities/s | "
                  "unique mentions per CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for index_type, sp in res["speed"].items():
            lines.append(f"| `{index_type}` | {sp['docs']} | {sp['entities']} | {sp['unique_mentions']} | "
                         f"{sp['seconds']:.2f} | **{sp['unique_per_s']:.0f}** | {sp['entities_per_s']:.0f} | "
                         f"{sp['unique_per_cpu_s']:.0f} |")
        c = res["cold"]
        lines += ["", f"Cold load of the saved pipeline (`{c['index_type']}` MEDIC index and the encoder inside; a fresh "
                      f"process, median of {c['repeats']}): `import spacy` {c['import_spacy_s']:.2f} s (torch comes with "
                      f"thinc), then **`spacy.load` {c['load_s']:.2f} s**; {c['first_doc_total_s']:.2f} s from process "
                      f"start to the first linked entity ({c['cpu_s']:.2f} CPU s); transformers imported: "
                      f"{'yes' if c['imports_transformers'] else 'no'}.", ""]
    if peer:
        lines += ["### scispaCy peer (same MEDIC names, same mentions, same run)", "", peer["how"], "",
                  "| linker | Acc@1 | Acc@5 | unique mentions/s | entities/s | unique mentions per CPU s | index build s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for run in peer["runs"]:
            sc = run["scores"]
            lines.append(f"| scispaCy TF-IDF char-3gram + {peer['knn']}, efSearch {run['ef_search']} | "
                         f"{sc['acc@1']:.2f} | {sc['acc@5']:.2f} | {run['unique_per_s']:.0f} | "
                         f"{run['entities_per_s']:.0f} | {run['unique_per_cpu_s']:.0f} | {peer['build_s']:.0f} |")
        best = None
        for res in results:
            for spec, sp in res["speed"].items():
                acc = accuracy_row(res["rows"], spec)
                lines.append(f"| spacy-el {res['label']} + `{spec}` | {acc['acc@1']:.2f} | {acc['acc@5']:.2f} | "
                             f"{sp['unique_per_s']:.0f} | {sp['entities_per_s']:.0f} | {sp['unique_per_cpu_s']:.0f} | "
                             f"{res['build'].get('seconds', float('nan')):.0f} |")
                if best is None or sp["unique_per_s"] > best[2]["unique_per_s"]:
                    best = (res["label"], spec, sp)
        fastest = max(peer["runs"], key=lambda r: r["unique_per_s"])
        lines += ["", f"Throughput ratio, fastest spacy-el ({best[0]} + `{best[1]}`) / fastest scispaCy (efSearch "
                      f"{fastest['ef_search']}): {best[2]['unique_per_s'] / fastest['unique_per_s']:.2f}× in unique "
                      f"mentions/s, {best[2]['unique_per_cpu_s'] / fastest['unique_per_cpu_s']:.2f}× per CPU second.",
                  ""]
    return "\n".join(lines)


def write_results(block: str) -> None:
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block.rstrip() + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + block.rstrip() + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("--work", type=Path, default=Path("/tmp/linker_bench"))
    ap.add_argument("--medic", type=Path, default=DATA / "dictionaries" / "medic_06Jul2012.txt")
    ap.add_argument("--dev", type=Path, default=DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    ap.add_argument("--stream", type=Path, nargs="+", default=[DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt",
                                                                DATA / "ncbi_disease" / "NCBItrainset_corpus.txt"])
    ap.add_argument("--base-encoder", default=str(minilm_dir()))
    ap.add_argument("--sap-encoder", default=None, help="a pretrained SapEncoder directory, if any")
    ap.add_argument("--student", type=Path, nargs="*", default=[],
                    help="encoders distilled from the base (`spacy-el distill`), timed as ONNX int8 exports")
    ap.add_argument("--distill-layers", type=int, nargs="*", default=[],
                    help="distil students of these many layers from the base here (WORK/student_L<n>, resumable)")
    ap.add_argument("--distill-epochs", type=int, default=10)
    ap.add_argument("--distill-lr", type=float, default=5e-4)
    ap.add_argument("--index-types", nargs="+", default=INDEX_TYPES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline-index", nargs="+", default=["HNSW32", "IVF256,PQ96"],
                    help="index types (besides Flat) the pipeline is timed with, each with optional search settings "
                         "(`HNSW32@ef_search=64`); the last one is also cold-loaded")
    ap.add_argument("--batch-size", type=int, default=64, help="the linker's encoder batch size")
    ap.add_argument("--scispacy-python", default=None,
                    help="python of a venv with scispaCy (see benchmarks/linker_scispacy.py for how to make one); "
                         "default: none, and the scispaCy rows are left out")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    args.load_start = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = read_kb(args.medic, "medic")
    dev_texts = list(dict.fromkeys(q.text for q in linking_queries(read_pubtator(args.dev))))
    nlp = spacy.blank("en")
    pairs = [p for path in args.stream for p in pubtator_docs(nlp, read_pubtator(path), with_ents=True)]
    base = SapEncoder.load(args.base_encoder, device="cpu", num_threads=args.threads)
    results = [run_encoder("base MiniLM", base, args, table, dev_texts, pairs)]
    results.append(run_encoder("base MiniLM int8", onnx_encoder(base, args.work / "onnx_int8", args.threads),
                               args, table, dev_texts, pairs))
    if args.sap_encoder:
        sap = SapEncoder.load(args.sap_encoder, device="cpu", num_threads=args.threads)
        results.append(run_encoder("SAP MiniLM int8", onnx_encoder(sap, args.work / "onnx_sap_int8", args.threads),
                                   args, table, dev_texts, pairs))
    args.student = [distilled_student(args, layers) for layers in args.distill_layers] + args.student
    for student_dir in args.student:
        student = SapEncoder.load(student_dir, device="cpu", num_threads=args.threads)
        layers = student.model.config.num_hidden_layers
        results.append(run_encoder(f"{layers}-layer student int8", onnx_encoder(
            student, args.work / f"onnx_student_{student.fingerprint[:8]}", args.threads), args, table, dev_texts, pairs))
        stats = Path(student_dir).parent / "distill.json"
        results[-1]["distill"] = json.loads(stats.read_text()) if stats.is_file() else None
    peer = scispacy_peer(args, table, dev_texts, pairs) if args.scispacy_python else None
    block = markdown(args, results, peer, time.perf_counter() - t0)
    (args.work / "results.json").write_text(json.dumps({"results": results, "peer": peer}, indent=2, default=str))
    print(block)
    if args.write_results:
        write_results(block)


if __name__ == "__main__":
    main()
