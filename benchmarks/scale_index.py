"""A UMLS-sized concept index on one machine: synthetic KBs of 1M, 3M and 10M realistic names,
embedded with a fast ONNX encoder and indexed *streaming* (`spacy_el.build.build_index_streaming`:
IVF-PQ trained on a sample, names added in chunks, never all vectors in memory).

Names: built from the words of the real MEDIC and Disease Ontology names. Every word of those
names is put in a slot by where it occurs (first word → modifier, last word → head, others →
middle; the text after a MEDIC comma → qualifier, "Anemia, Hemolytic"), and synthetic concept
`SYN:{i}` gets the name `modifier middle head[ qualifier]` picked by a bijective mixing of i
over the slot vocabularies (so concepts differ), plus one to three synonyms in the patterns real
KBs use: MEDIC's inverted "head, modifier middle", a qualifier variant and a short acronym form.
Each (concept, name) row is unique by construction.

Phases (run separately, so each build's peak RSS is its own process's):

    python benchmarks/scale_index.py build --names 1000000 --encoder student_int8 --work W
    python benchmarks/scale_index.py query --names 1000000 --work W     # timing: run under flock -x
    python benchmarks/scale_index.py report --work W
    python benchmarks/scale_index.py misses --names 1000000 --work W   # why the misses (--store-vectors)
    python benchmarks/scale_index.py cold --names 10000000 --work W    # first pass from a cold page cache

`build` also computes the exact top-5 of a 10k-query sample in the same pass over the chunks
(mention-like queries: a sampled name lowercased, a word dropped or the synonym order swapped),
so recall needs no second embedding pass. `query` measures `spacy.load` of a pipeline holding
the index (fresh process), unique mentions/s through `sap_linker` (first call, which builds the
index's row codes, and warm), and recall@5 against the exact search: by row id, and for indexes
that store their vectors (`--store-vectors`, rescored exactly) also as ann-benchmarks counts it,
by distance (a returned name counts when its exact cosine is within 1e-3 of the true one's, so
names with the same vector, e.g. one synonym under two concepts, tie instead of missing).
`faiss_ms_per_query` is the name search (FAISS, plus the rescoring when the index has vectors).

`cold` measures the first pass after loading from a cold page cache: each mode runs in a fresh
process that first drops the pipeline's files from the page cache (`posix_fadvise(DONTNEED)`,
no root needed for clean pages), loads it, and links the unique query mentions once: `off`
(`prefetch_index` false: every inverted list, table row and rescored vector a random disk
read), `on` (the default: the pass starts at once while the index's files are read in the
background) and `wait` (the pass starts when that read has finished, as a server that waits to
be ready).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
from report import add_data_arg, cpu_model, data_dir  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = data_dir()
MEDIC = DATA / "dictionaries" / "medic_06Jul2012.txt"
DO = DATA / "kb" / "disease_ontology" / "doid.obo.gz"
N_QUERIES = 10_000
K = 5


# ---------------------------------------------------------------------- synthetic names
def vocabularies() -> dict[str, list[str]]:
    """Slot vocabularies from the real MEDIC and Disease Ontology names, most frequent first."""
    from spacy_el.kb.readers import read_kb

    names = list(read_kb(MEDIC, "medic").names) + list(read_kb(DO, "obo").names)
    slots: dict[str, Counter] = {s: Counter() for s in ("modifier", "middle", "head", "qualifier")}
    for name in names:
        main, _, qualifier = name.partition(", ")
        words = main.split()
        if qualifier:
            slots["qualifier"][qualifier] += 1
        if len(words) >= 2:
            slots["modifier"][words[0]] += 1
            slots["head"][words[-1]] += 1
            for w in words[1:-1]:
                slots["middle"][w] += 1
        elif words:
            slots["head"][words[0]] += 1
    sizes = {"modifier": 1500, "middle": 1500, "head": 1000, "qualifier": 300}
    return {s: [w for w, _ in c.most_common(sizes[s])] for s, c in slots.items()}


def search_names(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k *names* per query vector (cosines and table rows, -1 past the last), as the first
    pass of `ConceptIndex.search` finds them: FAISS, rescored exactly when the index stores vectors."""
    from spacy_el.kb.faiss_utils import faiss

    queries = np.array(vectors, dtype="float32", order="C", ndmin=2)
    faiss.normalize_L2(queries)
    scores, rows, _ = index._names(queries, k, None, len(index.table), k)
    return scores, rows

def synthetic_rows(n_names: int, vocab: dict[str, list[str]]) -> Iterator[tuple[str, str, str]]:
    """Exactly `n_names` unique (concept id, name, "kb") rows (see the module docstring)."""
    mod, mid, head, qual = vocab["modifier"], vocab["middle"], vocab["head"], vocab["qualifier"]
    space = len(mod) * len(mid) * len(head)
    emitted, i = 0, 0
    while emitted < n_names:
        x = (i * 2_654_435_761 + 97) % space  # a bijection of i over the (modifier, middle, head) triples
        m, rest = x % len(mod), x // len(mod)
        d, h = rest % len(mid), rest // len(mid)
        q = qual[(i * 40_503) % len(qual)] if i % 3 == 0 else ""
        core = f"{mod[m]} {mid[d]} {head[h]}" if i % 4 else f"{mod[m]} {head[h]}"
        cid = f"SYN:{i:08d}"
        names = [f"{core}, {qual[(i * 7919) % len(qual)]}" if q else core]
        if i % 2 == 0:
            names.append(f"{head[h]}, {mod[m]} {mid[d]}" if i % 4 else f"{head[h]}, {mod[m]}")
        if i % 5 == 0:
            names.append(f"{core} {q or 'disorder'}".strip())
        if i % 7 == 0:
            names.append("".join(w[0] for w in core.split()).upper() + f" {1 + i % 9}")
        for name in dict.fromkeys(names):
            if emitted == n_names:
                return
            yield cid, name, "kb"
            emitted += 1
        i += 1


def mention_like(name: str, rng: np.random.Generator) -> str:
    """A query as text mentions it: lowercased, and a word dropped or the inverted order undone."""
    text = name.lower()
    if ", " in text and rng.random() < 0.5:
        a, b = text.split(", ", 1)
        return f"{b} {a}"
    words = text.replace(",", "").split()
    if len(words) > 2 and rng.random() < 0.5:
        del words[int(rng.integers(len(words)))]
    return " ".join(words)


# ---------------------------------------------------------------------- phases
def index_type_for(n_names: int) -> str:
    nlist = 4096 if n_names <= 1_500_000 else 8192 if n_names <= 4_000_000 else 16384
    return f"IVF{nlist}_HNSW32,PQ64"


def build(args: argparse.Namespace) -> None:
    from spacy_el.build import build_index_streaming
    from spacy_el.sap.encoders import load_encoder

    work = args.work / f"n{args.names}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    encoder = load_encoder(args.encoder)
    vocab = vocabularies()
    rng = np.random.default_rng(0)
    picks = set(rng.choice(args.names, size=min(N_QUERIES, args.names), replace=False).tolist())
    queries = [mention_like(name, rng) for pos, (_, name, _) in enumerate(synthetic_rows(args.names, vocab))
               if pos in picks]
    qvec = np.asarray(encoder.embed(queries), dtype="float32")
    qvec /= np.linalg.norm(qvec, axis=1, keepdims=True)
    best_s = np.full((len(queries), K), -np.inf, dtype="float32")
    best_i = np.full((len(queries), K), -1, dtype="int64")
    offset = [0]
    timing = {"exact_s": 0.0}

    def exact(rows, vectors):  # running exact top-K of the queries over every chunk (evaluation only)
        t = time.perf_counter()
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for q0 in range(0, len(qvec), 1000):  # 1000 queries at a time: a (1000, chunk) score block
            q1 = min(q0 + 1000, len(qvec))
            scores = qvec[q0:q1] @ v.T
            top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
            cand_s = np.concatenate([best_s[q0:q1], np.take_along_axis(scores, top, 1)], axis=1)
            cand_i = np.concatenate([best_i[q0:q1], top + offset[0]], axis=1)
            keep = np.argpartition(-cand_s, K - 1, axis=1)[:, :K]
            best_s[q0:q1], best_i[q0:q1] = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
        offset[0] += len(v)
        timing["exact_s"] += time.perf_counter() - t

    index_type = args.index_type or index_type_for(args.names)
    meta = build_index_streaming(lambda: synthetic_rows(args.names, vocab), encoder, work / "index",
                                 index_type=index_type, train_size=args.train_size, chunk_size=args.chunk_size,
                                 batch_size=512, nprobe=args.nprobe, on_chunk=exact, show_progress=True,
                                 store_vectors=args.store_vectors)
    wall = time.perf_counter() - t0
    np.save(work / "exact_top5.npy", best_i)
    np.save(work / "exact_top5_scores.npy", best_s)
    (work / "queries.json").write_text(json.dumps(queries))
    files = {p.name: p.stat().st_size for p in (work / "index").iterdir() if p.is_file()}
    columns = sum(p.stat().st_size for p in (work / "index" / "columns").iterdir())
    disk_vectors = files.get("vectors.f16", 0)
    result = {"names": args.names, "concepts": meta["n_concepts"], "index_type": index_type,
              "settings": meta["settings"], "encoder": str(args.encoder), "build_wall_s": round(wall, 1),
              "build_wall_s_without_exact": round(wall - timing["exact_s"], 1),
              "exact_search_s": round(timing["exact_s"], 1), "train_s": meta["build"]["train_seconds"],
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "index_bytes_per_name": round(files["index.faiss"] / args.names, 1),
              "columns_bytes_per_name": round(columns / args.names, 1),
              "stored_vectors_bytes_per_name_on_disk": round(disk_vectors / args.names, 1),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "load_end": os.getloadavg()[0]}
    (work / "build.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def query(args: argparse.Namespace) -> None:
    import spacy

    from spacy_el.build import index_from_dir
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.sap.encoders import encoder_from_path, load_encoder

    work = args.work / f"n{args.names}"
    built = json.loads((work / "build.json").read_text())
    queries = json.loads((work / "queries.json").read_text())
    exact = np.load(work / "exact_top5.npy")
    exact_top1 = exact[np.arange(len(exact)), np.argmax(np.load(work / "exact_top5_scores.npy"), axis=1)]
    encoder = load_encoder(built["encoder"])
    pipeline = work / "pipeline"
    if not pipeline.exists():
        nlp = spacy.blank("en")
        nlp.add_pipe("sap_linker").initialize(encoder_loader=encoder_from_path(built["encoder"]),
                                              index_loader=index_from_dir(str(work / "index")))
        nlp.to_disk(pipeline)
    load_s, warm_load_s = [], []
    # a fresh process each: spacy.load of the pipeline (index and table memory-mapped); the second
    # figure after spacy.blank("en"), which imports every installed spaCy plugin's factories
    # (spacy-transformers imports transformers and torch: seconds, whatever the pipeline holds)
    for first, times in (("", load_s), ("spacy.blank('en'); ", warm_load_s)):
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", f"import time, spacy, spacy_el; {first}t = time.perf_counter(); "
                                  f"spacy.load({str(pipeline)!r}); print(time.perf_counter() - t)"],
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    nprobe, factor = args.query_nprobe, args.rescore_factor
    index = ConceptIndex.load(work / "index", encoder, use_gpu=False, nprobe=nprobe, rescore_factor=factor)
    qvec = encoder.embed(queries)
    t = time.perf_counter()
    _, rows = search_names(index, qvec, K)
    search_ms = (time.perf_counter() - t) / len(queries) * 1000
    one_recall = float(np.mean([t in set(r) for t, r in zip(exact_top1.tolist(), rows.tolist())]))
    overlap = float(np.mean([len(set(e) & set(r)) / K for e, r in zip(exact, rows)]))
    by_distance = {}
    if index.vectors is not None:  # ann-benchmarks' recall: a name counts when its exact cosine is within 1e-3
        exact_scores = np.load(work / "exact_top5_scores.npy")  # of the true k-th (names with equal vectors tie)
        unit = qvec / np.linalg.norm(qvec, axis=1, keepdims=True)
        got = np.einsum("qkd,qd->qk", index.vectors.rows(np.clip(rows, 0, None).ravel()).reshape(*rows.shape, -1), unit)
        got[rows < 0] = -np.inf
        by_distance = {"one_recall_at_5_eps": round(float(np.mean(got.max(1) >= exact_scores.max(1) - 1e-3)), 4),
                       "overlap_recall_at_5_eps": round(float(np.mean(
                           (got >= exact_scores.min(1, keepdims=True) - 1e-3).sum(1) / K)), 4)}
    nlp = spacy.load(pipeline)
    linker = nlp.get_pipe("sap_linker")
    if nprobe:  # the same search setting in the pipeline's own copy of the index
        from spacy_el.kb.faiss_utils import apply_search_settings

        apply_search_settings(linker.index.index, {"nprobe": nprobe})
    if factor:
        linker.index.vectors.rescore_factor = factor
    from spacy.tokens import Doc, Span

    def docs(texts):
        for text in texts:
            doc = Doc(nlp.vocab, words=text.split())
            doc.ents = [Span(doc, 0, len(doc), label="DISEASE")]
            yield doc

    unique = list(dict.fromkeys(queries))
    timings = {}
    for label in ("first", "warm"):
        linker.clear_cache()
        batch = list(docs(unique))
        t = time.perf_counter()
        for _ in linker.pipe(batch, batch_size=256):
            pass
        timings[label] = len(unique) / (time.perf_counter() - t)
    result = {"spacy_load_s": round(float(np.median(load_s)), 2),
              "spacy_load_s_plugins_imported": round(float(np.median(warm_load_s)), 2), "one_recall_at_5": round(one_recall, 4),
              "overlap_recall_at_5": round(overlap, 4), **by_distance, "faiss_ms_per_query": round(search_ms, 3),
              "unique_mentions": len(unique), "mentions_per_s_first": round(timings["first"]),
              "mentions_per_s_warm": round(timings["warm"]), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "load_start": os.getloadavg()[0], "nprobe": nprobe or built["settings"].get("nprobe"),
              "rescore_factor": index.vectors.rescore_factor if index.vectors is not None else None}
    name = "query" + (f"_nprobe{nprobe}" if nprobe else "") + (f"_rescore{factor}" if factor else "")
    (work / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def misses(args: argparse.Namespace) -> None:
    """Why the true nearest name is missed (an index built with --store-vectors): for each query whose
    true nearest name scores > 1e-3 above everything the rescored search returns, the PQ estimate of that
    name's cosine against its exact cosine, and the rank of its inverted list among the query's nearest lists."""
    import faiss

    from spacy_el.kb.faiss_utils import apply_search_settings
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.sap.encoders import load_encoder

    work = args.work / f"n{args.names}"
    built = json.loads((work / "build.json").read_text())
    queries = json.loads((work / "queries.json").read_text())
    exact, exact_scores = np.load(work / "exact_top5.npy"), np.load(work / "exact_top5_scores.npy")
    top1, top1_score = exact[np.arange(len(exact)), exact_scores.argmax(1)], exact_scores.max(1)
    encoder = load_encoder(built["encoder"])
    index = ConceptIndex.load(work / "index", encoder, use_gpu=False, rescore_factor=args.rescore_factor or 8)
    qvec = np.asarray(encoder.embed(queries), dtype="float32")
    qvec /= np.linalg.norm(qvec, axis=1, keepdims=True)
    ivf = faiss.extract_index_ivf(index.cpu_index)
    ivf.make_direct_map()
    out = {"rescore_factor": index.vectors.rescore_factor}
    for nprobe in (32, 256):
        apply_search_settings(index.index, {"nprobe": nprobe})
        _, rows = index.search_names(qvec, K)
        got = np.einsum("qkd,qd->qk", index.vectors.rows(np.clip(rows, 0, None).ravel()).reshape(*rows.shape, -1), qvec)
        missed = np.flatnonzero(got.max(1) < top1_score - 1e-3)
        out[f"missed_at_nprobe_{nprobe}"] = round(len(missed) / len(queries), 4)
    pq_estimate = np.einsum("qd,qd->q", np.stack([ivf.reconstruct(int(top1[i])) for i in missed]), qvec[missed])
    _, nearest_lists = ivf.quantizer.search(qvec[missed], 256)
    lists = [ivf.direct_map.get(int(top1[i])) >> 32 for i in missed]
    rank = np.array([list(near).index(lst) if lst in near else 256 for near, lst in zip(nearest_lists.tolist(), lists)])
    out |= {"n_missed_at_nprobe_256": len(missed),
            "exact_cosine_median": round(float(np.median(top1_score[missed])), 3),
            "pq_estimate_median": round(float(np.median(pq_estimate)), 3),
            "list_rank_quantiles_10_50_90": np.quantile(rank, [0.1, 0.5, 0.9]).tolist(),
            "share_of_lists_beyond_256": round(float(np.mean(rank >= 256)), 3)}
    (work / "misses.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def _evict(folder: Path) -> int:
    """Drop every file under `folder` from the page cache; returns the bytes concerned."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += path.stat().st_size
    return total


def cold(args: argparse.Namespace) -> None:
    work = args.work / f"n{args.names}"
    if args.mode is None:  # every mode in a fresh process (no mapping of an earlier load keeps pages)
        results = []
        for mode in ("off", "on", "wait"):
            cmd = [sys.executable, __file__, "cold", "--names", str(args.names), "--work", str(args.work),
                   "--mode", mode] + (["--query-nprobe", str(args.query_nprobe)] if args.query_nprobe else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        (work / "cold.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return
    import spacy
    from spacy.tokens import Doc, Span

    pipeline = work / "pipeline"
    evicted = _evict(pipeline)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    nlp = spacy.load(pipeline, config={"components": {"sap_linker": {"performance": {"prefetch_index": args.mode != "off"}}}})
    load_s = time.perf_counter() - t
    linker = nlp.get_pipe("sap_linker")
    if args.query_nprobe:
        from spacy_el.kb.faiss_utils import apply_search_settings

        apply_search_settings(linker.index.index, {"nprobe": args.query_nprobe})
    thread = linker.index.prefetching
    waited = None
    if args.mode != "off" and thread is None:
        raise SystemExit(f"{pipeline}: the index was not prefetched (its files exceed the available memory)")
    if args.mode == "wait":
        t = time.perf_counter()
        thread.join()
        waited = time.perf_counter() - t
    unique = list(dict.fromkeys(json.loads((work / "queries.json").read_text())))
    batch = []
    for text in unique:
        doc = Doc(nlp.vocab, words=text.split())
        doc.ents = [Span(doc, 0, len(doc), label="DISEASE")]
        batch.append(doc)
    t = time.perf_counter()
    for _ in linker.pipe(batch, batch_size=256):
        pass
    first = time.perf_counter() - t
    print(json.dumps({"mode": args.mode, "evicted_gb": round(evicted / 1e9, 2), "spacy_load_s": round(load_s, 2),
                      "waited_for_prefetch_s": None if waited is None else round(waited, 1),
                      "prefetch_still_running_after_pass": bool(thread is not None and thread.is_alive()),
                      "unique_mentions": len(unique), "first_pass_s": round(first, 1),
                      "mentions_per_s_first": round(len(unique) / first), "load_start": load0,
                      "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}))


def report(args: argparse.Namespace) -> None:
    rows = []
    for d in sorted(args.work.glob("n*"), key=lambda p: int(p.name[1:])):
        if (d / "build.json").exists():
            rows.append((json.loads((d / "build.json").read_text()),
                         json.loads((d / "query.json").read_text()) if (d / "query.json").exists() else {}))
    print(f"{cpu_model()}, {os.cpu_count()} CPU cores, no GPU (CPU figures)\n")
    print("| names | concepts | index | build wall min (excl. exact) | peak RSS GB | index B/name | table B/name | "
          "`spacy.load` s | 1-recall@5 | 5-recall@5 | FAISS ms/query | unique mentions/s (first / warm) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b, q in rows:
        print(f"| {b['names']:,} | {b['concepts']:,} | `{b['index_type']}` nprobe {b['settings'].get('nprobe')} | "
              f"{b['build_wall_s'] / 60:.1f} ({b['build_wall_s_without_exact'] / 60:.1f}) | {b['peak_rss_gb']} | "
              f"{b['index_bytes_per_name']} | {b.get('columns_bytes_per_name', '–')} | "
              f"{q.get('spacy_load_s', '–')} | "
              f"{q.get('one_recall_at_5', '–')} | {q.get('overlap_recall_at_5', '–')} | {q.get('faiss_ms_per_query', '–')} | "
              f"{q.get('mentions_per_s_first', '–')} / {q.get('mentions_per_s_warm', '–')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("phase", choices=["build", "query", "misses", "cold", "report"])
    ap.add_argument("--mode", choices=["off", "on", "wait"], default=None, help="cold: one mode only (default: all)")
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--encoder", type=Path, help="build: ONNX encoder directory (the 0-layer student)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scale_index"))
    ap.add_argument("--index-type", default=None, help="default: IVF{4096|8192|16384}_HNSW32,PQ64 by size")
    ap.add_argument("--nprobe", type=int, default=32, help="build: the index's saved nprobe")
    ap.add_argument("--query-nprobe", type=int, default=None,
                    help="query: search with this nprobe instead of the saved one (writes query_nprobeN.json)")
    ap.add_argument("--train-size", type=int, default=150_000)
    ap.add_argument("--store-vectors", action="store_true",
                    help="build: keep every vector on disk (float16) to rescore the PQ candidates exactly")
    ap.add_argument("--rescore-factor", type=int, default=None,
                    help="query: names fetched per name wanted before exact rescoring (stored vectors only)")
    ap.add_argument("--chunk-size", type=int, default=50_000)
    args = ap.parse_args()
    {"build": build, "query": query, "misses": misses, "cold": cold, "report": report}[args.phase](args)


if __name__ == "__main__":
    main()
