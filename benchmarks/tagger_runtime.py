"""bilstm_ner's two prediction paths on one trained pipeline: torch (its PyTorch modules) and
numpy (the same weights in `spacy_el.ner.numpy_forward`, what a pipeline runs without torch).
Same entities, and words/s on one thread.

    python benchmarks/tagger_runtime.py training/ner/model-best corpus/ner_dev.spacy --rounds 7

The dev docs' words go through the components before the tagger once (gazetteers); then the
tagger alone (`pipe.pipe`, batch --batch-size) tags them under each path in turn, the order
flipped every round so drift hits both alike, after one warm-up pass each; the median words/s
of --rounds passes is reported. Entities are compared doc by doc: any entity one path finds and
the other does not is counted. One thread: BLAS and torch are limited to one before they load.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from report import cpu_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a trained pipeline directory (e.g. a run's model-best)")
    ap.add_argument("dev", type=Path, help="a DocBin (.spacy) of texts to tag")
    ap.add_argument("--component", default="bilstm_ner")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON line here too")
    args = ap.parse_args()

    import numpy as np
    import spacy
    import torch
    from spacy.tokens import DocBin

    from spacy_el.ner.distill import tagger_inputs
    from spacy_el.ner.modules import prediction_backend

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    nlp = spacy.load(args.model)
    pipe = nlp.get_pipe(args.component)
    docs = tagger_inputs(nlp, list(DocBin().from_disk(args.dev).get_docs(nlp.vocab)), args.component)
    n_words = sum(len(doc) for doc in docs)

    def tag(backend: str) -> tuple[list, float]:
        with prediction_backend(backend):
            start = time.perf_counter()
            tagged = list(pipe.pipe(docs, batch_size=args.batch_size))
            seconds = time.perf_counter() - start
        return [{(e.start, e.end, e.label_) for e in doc.ents} for doc in tagged], seconds

    with prediction_backend("torch"):
        torch_scores = pipe.emissions(docs[:args.batch_size])
    numpy_scores = pipe.emissions(docs[:args.batch_size])
    max_score_diff = max((float(np.abs(a - b).max()) for a, b in zip(torch_scores, numpy_scores) if len(a)), default=0.0)

    ents = {}
    for backend in ("torch", "numpy"):  # also the warm-up
        ents[backend], _ = tag(backend)
    only_torch = sum(len(t - n) for t, n in zip(ents["torch"], ents["numpy"]))
    only_numpy = sum(len(n - t) for t, n in zip(ents["torch"], ents["numpy"]))
    docs_differing = sum(t != n for t, n in zip(ents["torch"], ents["numpy"]))

    wps: dict[str, list[float]] = {"torch": [], "numpy": []}
    for r in range(args.rounds):
        for backend in (("torch", "numpy") if r % 2 == 0 else ("numpy", "torch")):
            _, seconds = tag(backend)
            wps[backend].append(n_words / seconds)
    result = {
        "model": str(args.model), "dev": str(args.dev), "docs": len(docs), "words": n_words,
        "entities_torch": sum(map(len, ents["torch"])), "entities_numpy": sum(map(len, ents["numpy"])),
        "only_torch": only_torch, "only_numpy": only_numpy, "docs_differing": docs_differing,
        "max_emission_diff": max_score_diff,
        "wps_torch": round(statistics.median(wps["torch"])), "wps_numpy": round(statistics.median(wps["numpy"])),
        "wps_torch_runs": [round(x) for x in wps["torch"]], "wps_numpy_runs": [round(x) for x in wps["numpy"]],
        "ratio": round(statistics.median(wps["numpy"]) / statistics.median(wps["torch"]), 3),
        "batch_size": args.batch_size, "rounds": args.rounds, "threads": 1, "cpu": cpu_model(),
        "load_before": load_before, "load_after": os.getloadavg()[0], "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "torch": torch.__version__, "numpy": np.__version__,
    }
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
