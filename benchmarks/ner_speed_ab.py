"""Tagging speed and dev F1 of one trained `bilstm_ner` pipeline under this checkout or an older
revision, on the same machine and files. Run it once per side, the old side with the older
checkout first on the path, the two sides alternating run by run as separate processes (each side
prints one JSON line), e.g. four pairs:

    for i in 1 2 3 4; do
        PYTHONPATH=OLD_CHECKOUT python benchmarks/ner_speed_ab.py MODEL DEV >> old.jsonl
        python benchmarks/ner_speed_ab.py MODEL DEV >> new.jsonl
    done

Speed is `nlp.pipe` over the pre-tokenized dev docs, one process and one thread, batch 256,
best of `--repeats` passes after a warm-up (`ner_conll.evaluate`, as in every NER table);
F1 is spaCy's scorer on the same docs, so a faster path that changes a prediction shows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ner_conll import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a trained pipeline directory (e.g. a run's model-best)")
    ap.add_argument("dev", type=Path, help="the dev DocBin (.spacy) it was scored on")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import spacy_el

    result = evaluate(args.model, args.dev, repeats=args.repeats, n_processes=(1,))
    print(json.dumps({"spacy_el": str(Path(spacy_el.__file__).parent.parent), "model": str(args.model),
                      "f": round(100 * result["f"], 4), "words_per_s": round(result["wps1"]),
                      "per_type": {k: round(100 * v, 4) for k, v in result["per_type"].items()}}))


if __name__ == "__main__":
    main()
