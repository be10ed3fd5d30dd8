"""Linking throughput of this checkout against an older revision, on the same machine and data:
`sap_linker` over one encoder and one index directory, NCBI-disease dev + train abstracts with the
gold mention spans as `doc.ents` (NER excluded), empty caches, best of `--repeats` passes. Run it
once per side, each side in the interpreter of its own install, paired by `farm-bench --vs`:

    farm-bench --vs "OLD_VENV/bin/python benchmarks/linker_speed_ab.py --encoder E --index I" \\
                    "python benchmarks/linker_speed_ab.py --encoder E --index I"

It builds the linker through whichever API the installed spacy-el has: the `initialize` loaders
(current) or the factory's `encoder`/`index` paths (before the issue-15 redesign), so the same file
times both. Prints one JSON line: unique mentions/s, entities/s, seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import spacy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ncbi_disease"


def gold_docs(nlp, paths):
    from spacy_el.corpora.pubtator import read_pubtator

    docs = []
    for path in paths:
        for pdoc in read_pubtator(path).docs:
            doc = nlp.make_doc(pdoc.text)
            spans, taken = [], set()
            for m in sorted(pdoc.mentions, key=lambda m: (m.start, -m.end)):
                span = doc.char_span(m.start, m.end, label="Disease", alignment_mode="expand")
                if span is not None and taken.isdisjoint(range(span.start, span.end)):
                    taken.update(range(span.start, span.end))
                    spans.append(span)
            doc.ents = spans
            docs.append(doc)
    return docs


def make_linker(encoder: str, index: str):
    nlp = spacy.blank("en")
    try:
        from spacy_el.build import index_from_dir
        from spacy_el.sap.encoders import encoder_from_path
    except ImportError:  # the revision before the loaders: paths in the factory config
        linker = nlp.add_pipe("sap_linker", config={"encoder": encoder, "index": index})
    else:
        linker = nlp.add_pipe("sap_linker")
        linker.initialize(encoder_loader=encoder_from_path(encoder), index_loader=index_from_dir(index))
    return nlp, linker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    nlp, linker = make_linker(args.encoder, args.index)
    docs = gold_docs(nlp, [DATA / "NCBIdevelopset_corpus.txt", DATA / "NCBItrainset_corpus.txt"])
    n_ents = sum(len(d.ents) for d in docs)
    n_unique = len({e.text for d in docs for e in d.ents})
    best = float("inf")
    for _ in range(args.repeats):
        linker.clear_cache()
        fresh = [d.copy() for d in docs]
        start = time.perf_counter()
        for _ in linker.pipe(fresh, batch_size=256):
            pass
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"unique_mentions_per_s": round(n_unique / best), "entities_per_s": round(n_ents / best),
                      "seconds": round(best, 3), "unique_mentions": n_unique, "entities": n_ents}))


if __name__ == "__main__":
    main()
