"""Corpus annotation throughput: `nlp.pipe` in one process against `spacy-el annotate` with the
local engine (n_process 1 and 2) and the Ray engine (1 and 2 actors), in one run, same corpus,
same pipeline.

Corpus: the NCBI-disease and BC5CDR train+dev abstracts (PubTator), repeated with an id suffix
(`-r1`, `-r2`, …) until there are `--docs` of them (repeated texts are identical; the linker's
mention cache sees the repeats, in every engine alike). Pipeline: an `entity_ruler` over every
MEDIC name (label DISEASE, case-insensitive) + `sap_linker` with an ONNX encoder over a MEDIC
index. Build those first, or give any saved pipeline with `--pipeline DIR` (e.g. the demo's
`training/pipeline`: `kb_gazetteer` → `bilstm_ner` → `el_abbreviation_detector` → `sap_linker`, whose
tagger does real work on every document, repeated or not):

    spacy-el export-onnx MINILM_DIR minilm_int8 --quantize
    spacy-el build-index medic_06Jul2012.txt minilm_int8 medic_hnsw --index-type HNSW32
    python benchmarks/annotate.py --encoder minilm_int8 --index medic_hnsw --work /tmp/annotate_bench
    python benchmarks/annotate.py --pipeline DEMO/training/pipeline --work /tmp/annotate_demo

Every engine's time includes loading the pipeline (and, for Ray, starting its actors; `ray.init`
is timed apart). Engines other than `nlp.pipe` also write Parquet shards. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from report import add_data_arg, cpu_model, data_dir  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = data_dir()
CORPORA = [DATA / "ncbi_disease" / "NCBItrainset_corpus.txt", DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt",
           DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt", DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"]
MEDIC = DATA / "dictionaries" / "medic_06Jul2012.txt"


def build_corpus(path: Path, n_docs: int) -> tuple[int, int, int]:
    """JSONL of ≥ n_docs abstracts; returns (docs, distinct abstracts, words)."""
    from spacy_el.corpora.pubtator import read_pubtator

    seen, base = set(), []
    for corpus in CORPORA:
        for doc in read_pubtator(corpus).docs:
            if doc.pmid not in seen:
                seen.add(doc.pmid)
                base.append((doc.pmid, doc.text))
    docs, words, copy = [], 0, 0
    while len(docs) < n_docs:
        for pmid, text in base:
            if len(docs) == n_docs:
                break
            docs.append(json.dumps({"id": pmid if copy == 0 else f"{pmid}-r{copy}", "text": text}))
            words += len(text.split())
        copy += 1
    path.write_text("\n".join(docs) + "\n")
    return len(docs), len(base), words


def build_pipeline(path: Path, encoder: str, index: str) -> None:
    import spacy

    from spacy_el.build import index_from_dir
    from spacy_el.kb.readers import read_kb
    from spacy_el.sap.encoders import encoder_from_path

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    names = sorted({n for n in read_kb(MEDIC, "medic").names if len(n) > 2})
    ruler.add_patterns([{"label": "DISEASE", "pattern": n} for n in names])
    nlp.add_pipe("sap_linker").initialize(encoder_loader=encoder_from_path(encoder),
                                          index_loader=index_from_dir(index))
    nlp.to_disk(path)


class ProcessCPU:
    """CPU seconds of every process on the machine during a run, by process name (read from
    /proc every half second, so processes that exit mid-run, such as Ray's actors, still count)."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[int, tuple[str, float]] = {}
        self.start = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _sample() -> dict[int, tuple[str, float]]:
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                cmd = Path(entry.path, "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            out[int(entry.name)] = (cmd if cmd.startswith("ray::") else name, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.seen.update(self._sample())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.seen.update(self._sample())
        groups: dict[str, float] = {}
        for pid, (name, cpu) in self.seen.items():
            used = cpu - self.start.get(pid, (name, 0.0))[1]
            if used > 0.05:
                key = "this process (the driver)" if pid == os.getpid() else name
                groups[key] = groups.get(key, 0.0) + used
        return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def time_nlp_pipe(pipeline: Path, corpus: Path, batch_size: int) -> tuple[float, int, float, list]:
    """(wall s, entities, of which loading s, component names)."""
    import spacy

    t0 = time.perf_counter()
    nlp = spacy.load(pipeline)
    load_s = time.perf_counter() - t0
    texts = (json.loads(line)["text"] for line in corpus.open())
    n_ents = sum(len(doc.ents) for doc in nlp.pipe(texts, batch_size=batch_size))
    return time.perf_counter() - t0, n_ents, load_s, nlp.pipe_names


def two_processes(pipeline: Path, corpus: Path, batch_size: int, work: Path) -> tuple[float, int]:
    """`nlp.pipe` in two processes started together, each over its half of the corpus, nothing
    shared and nothing sent back: what two workers can do on this machine at best. (wall s of
    the slower, entities)."""
    lines = corpus.read_text().splitlines(keepends=True)
    halves = [work / "half0.jsonl", work / "half1.jsonl"]
    halves[0].write_text("".join(lines[: len(lines) // 2]))
    halves[1].write_text("".join(lines[len(lines) // 2:]))
    code = ("import sys, json; sys.path.insert(0, {bench!r}); from annotate import time_nlp_pipe; "
            "from pathlib import Path; s, e, _, _ = time_nlp_pipe(Path({p!r}), Path(sys.argv[1]), {b}); "
            "print(json.dumps([s, e]))").format(bench=str(Path(__file__).parent), p=str(pipeline), b=batch_size)
    import resource
    import subprocess
    import sys

    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(h)], stdout=subprocess.PIPE, text=True) for h in halves]
    outs = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError("a pipe2 process failed")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"pipe2: the two processes used {cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime:.1f} CPU-s "
          f"(each: {', '.join(f'{s:.1f} s' for s, _ in outs)} wall)")
    return time.perf_counter() - t0, sum(e for _, e in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("--encoder", help="ONNX (or torch) encoder directory of the linker")
    ap.add_argument("--index", help="Concept index directory built with that encoder")
    ap.add_argument("--pipeline", type=Path, help="a saved pipeline to time instead of entity_ruler + sap_linker")
    ap.add_argument("--work", type=Path, default=Path("/tmp/annotate_bench"))
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--engines", nargs="+", default=["pipe", "local1", "local2", "ray1", "ray2"],
                    help="pipe, pipe2 (two independent nlp.pipe processes, half the corpus each: the machine's ceiling), "
                         "local1, local2, ray1, ray2")
    ap.add_argument("--cpu-by-process", action="store_true",
                    help="also report the CPU seconds of every process (Ray's actors, raylet, GCS, ...) per engine")
    ap.add_argument("--cache-size", type=int, default=None,
                    help="sap_linker's mention cache for this run (0: none; the corpus repeats its abstracts, so "
                         "with a cache each extra worker re-embeds mentions one worker embeds once)")
    args = ap.parse_args()

    from spacy_el.annotate import annotate

    args.work.mkdir(parents=True, exist_ok=True)
    if args.pipeline is None and not (args.encoder and args.index):
        ap.error("give --encoder and --index (entity_ruler + sap_linker), or --pipeline DIR")
    corpus, pipeline = args.work / "corpus.jsonl", args.pipeline or args.work / "pipeline"
    n_docs, n_base, n_words = build_corpus(corpus, args.docs)
    if not pipeline.exists():
        build_pipeline(pipeline, args.encoder, args.index)
    if args.cache_size is not None:  # a copy of the pipeline with another mention cache, for every engine
        import spacy

        linker = next(name for name, pipe in spacy.load(pipeline).pipeline if type(pipe).__name__ == "SapEntityLinker")
        copy = args.work / f"pipeline_cache{args.cache_size}"
        spacy.load(pipeline, config={"components": {linker: {"performance": {"cache_size": args.cache_size}}}}).to_disk(copy)
        pipeline = copy
    load0 = os.getloadavg()[0]
    started = datetime.now(timezone.utc)
    results: dict[str, tuple[float, int]] = {}
    driver_cpu: dict[str, float] = {}  # CPU seconds of this process (for Ray: the driver) per engine
    by_process: dict[str, dict[str, float]] = {}  # --cpu-by-process: engine → process name → CPU s
    ray_init_s = load_s = None
    names: list = []
    for engine in args.engines:
        out = args.work / f"out_{engine}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        if engine == "pipe":
            cpu0 = time.process_time()
            secs, ents, load_s, names = time_nlp_pipe(pipeline, corpus, args.batch_size)
            driver_cpu[engine] = time.process_time() - cpu0
            results[engine] = (secs, ents)
            continue
        if engine == "pipe2":  # the machine's ceiling: two independent processes, half the corpus each
            results[engine] = two_processes(pipeline, corpus, args.batch_size, args.work)
            continue
        if engine.startswith("ray") and ray_init_s is None:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
            ray_init_s = time.perf_counter() - t0
        n = int(engine.split("-")[0][-1])
        meter = ProcessCPU() if args.cpu_by_process else None
        t0, cpu0 = time.perf_counter(), time.process_time()
        stats = annotate(pipeline, corpus, out, engine="ray" if engine.startswith("ray") else "local",
                         n_process=n, workers=n, batch_size=args.batch_size, shard_size=args.shard_size,
                         show_progress=False)
        results[engine] = (time.perf_counter() - t0, stats.n_entities)
        driver_cpu[engine] = time.process_time() - cpu0
        if meter is not None:
            by_process[engine] = meter.stop()
    load1 = os.getloadavg()[0]
    labels = {"pipe": "`nlp.pipe`, 1 process (no output)",
              "pipe2": "`nlp.pipe`, 2 independent processes, half the corpus each (no output)", "local1": "annotate --engine local --n-process 1",
              "local2": "annotate --engine local --n-process 2", "ray1": "annotate --engine ray --workers 1",
              "ray2": "annotate --engine ray --workers 2"}
    ref = results.get("pipe", next(iter(results.values())))[0]
    source = f"--pipeline {args.pipeline}" if args.pipeline else f"--encoder {args.encoder} --index {args.index}"
    cache = f" --cache-size {args.cache_size}" if args.cache_size is not None else ""
    print(f"\n`python benchmarks/annotate.py {source} --docs {args.docs} "
          f"--batch-size {args.batch_size} --shard-size {args.shard_size}{cache}` — {started:%Y-%m-%d %H:%M} UTC, "
          f"{cpu_model()}, {os.cpu_count()} CPU cores, no GPU (CPU figures); load average {load0:.1f} at the start, "
          f"{load1:.1f} at the end; {n_docs} abstracts ({n_base} distinct NCBI-disease + BC5CDR train/dev abstracts, "
          f"repeated with an id suffix), {n_words} words (whitespace-separated)"
          + (f"; pipeline {' → '.join(names)}, `spacy.load` {load_s:.1f} s (in every row, once per process or actor)"
             if load_s is not None else "")
          + (f"; `ray.init` {ray_init_s:.1f} s, not included" if ray_init_s is not None else "") + ".\n")
    print("| engine | wall s | docs/s | words/s | entities | vs `nlp.pipe` | CPU s of the calling process |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, (secs, ents) in results.items():
        cpu = f"{driver_cpu[engine]:.1f}" if engine in driver_cpu else "–"
        print(f"| {labels[engine]} | {secs:.1f} | {n_docs / secs:.1f} | {n_words / secs:.0f} | {ents} | "
              f"{ref / secs:.2f}× | {cpu} |")
    print()
    if "pipe" in results and "pipe2" in results:
        print(f"two independent processes vs one (the machine's ceiling): {results['pipe'][0] / results['pipe2'][0]:.2f}×")
    if "ray1" in results and "ray2" in results:
        print(f"{labels['ray2']} vs 1 actor: {results['ray1'][0] / results['ray2'][0]:.2f}×")
    if "local1" in results and "local2" in results:
        print(f"local n_process 2 vs 1: {results['local1'][0] / results['local2'][0]:.2f}×")
    for engine, groups in by_process.items():
        total = sum(groups.values())
        print(f"\nCPU seconds by process, {labels[engine]} ({results[engine][0]:.1f} s wall, {total:.1f} CPU-s in all): "
              + "; ".join(f"{name} {cpu:.1f}" for name, cpu in groups.items() if cpu >= 0.5))


if __name__ == "__main__":
    main()
