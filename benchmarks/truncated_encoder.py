"""What a smaller encoder would buy (issue 4's next lever): MiniLM cut to its first N layers, no
training, exported to ONNX Runtime int8 as the serving encoder is, then MEDIC embedding speed and
NCBI-disease dev Acc@1/@5 (exact `Flat` search, `evaluate_linking`). A distilled student would
start from these weights; the rows bound what distillation has to recover.

    python benchmarks/truncated_encoder.py --layers 6 3 2 [--work /tmp/trunc]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.readers import read_medic
from spacy_el.linker.link import evaluate_linking
from spacy_el.models import minilm_dir
from spacy_el.sap.distill import student_of
from spacy_el.sap.encoder import SapEncoder
from spacy_el.sap.onnx import OnnxEncoder

from report import add_data_arg, data_dir  # noqa: E402

DATA = data_dir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 3, 2])
    ap.add_argument("--work", type=Path, default=Path("/tmp/trunc"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    medic = read_medic(DATA / "dictionaries" / "medic_06Jul2012.txt")
    dev = DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt"
    rows = []
    base = SapEncoder.load(minilm_dir(), device="cpu", pooling="mean")
    for n in args.layers:  # MiniLM's embeddings and first n layers, untrained (`spacy-el distill`'s start)
        OnnxEncoder.export(student_of(base, n), args.work / f"L{n}_int8", quantize=True)
        enc = OnnxEncoder.load(args.work / f"L{n}_int8", num_threads=args.threads)
        t = time.perf_counter()
        index = ConceptIndex.build(medic, enc, "Flat", batch_size=256)
        names_per_s = len(medic) / (time.perf_counter() - t)
        r = evaluate_linking(dev, enc, index)
        rows.append((n, names_per_s, r["acc@1"], r["acc@5"]))
        print(f"L{n}: {names_per_s:.0f} names/s, Acc@1 {r['acc@1']:.2f}, Acc@5 {r['acc@5']:.2f}", flush=True)
    print(f"\n`python benchmarks/truncated_encoder.py --layers {' '.join(map(str, args.layers))}` — "
          f"{dt.date.today().isoformat()}, {os.cpu_count()} CPU cores, ONNX Runtime int8, {args.threads} threads, "
          "no GPU.\n")
    print("| MiniLM layers (no training) | MEDIC names/s (embedding + Flat) | speed vs 6 layers | NCBI dev Acc@1 | Acc@5 |")
    print("|---|---:|---:|---:|---:|")
    base = next((r[1] for r in rows if r[0] == 6), rows[0][1])
    for n, speed, a1, a5 in rows:
        print(f"| {n} | {speed:.0f} | {speed / base:.2f}× | {a1:.2f} | {a5:.2f} |")


if __name__ == "__main__":
    main()
