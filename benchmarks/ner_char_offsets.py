"""NER by exact character offsets over *all* gold mentions: raw PubTator abstracts (title + " " +
abstract) through each pipeline's own tokenizer, mention P/R/F per type.

spaCy's scorer on converted dev docs (what `ner_ablation.py` reports) skips gold mentions whose
offsets fall inside a token (they are marked missing at conversion), so two pipelines with
different tokenizers are not compared on the same mentions there. This is the fair comparison.

    python benchmarks/ner_char_offsets.py MODEL [MODEL …] --corpus CDR_DevelopmentSet.PubTator.txt
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def char_offset_scores(model: str, corpus: Path) -> dict:
    """Per mention type: P/R/F (percent) of the pipeline's `doc.ents` against the gold offsets."""
    import spacy

    from spacy_el.corpora.pubtator import read_pubtator

    docs = read_pubtator(corpus).docs
    nlp = spacy.load(model)
    tp, n_pred, n_gold = collections.Counter(), collections.Counter(), collections.Counter()
    for gold_doc, doc in zip(docs, nlp.pipe((d.text for d in docs), batch_size=32)):
        gold = {(m.start, m.end, m.type) for m in gold_doc.mentions}
        pred = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        for label in {m[2] for m in gold}:
            g, p = {m for m in gold if m[2] == label}, {m for m in pred if m[2] == label}
            tp[label] += len(g & p)
            n_pred[label] += len(p)
            n_gold[label] += len(g)
    scores = {}
    for label in sorted(n_gold):
        p, r = tp[label] / max(n_pred[label], 1), tp[label] / n_gold[label]
        scores[label] = {"p": 100 * p, "r": 100 * r, "f": 200 * p * r / max(p + r, 1e-9), "n_gold": n_gold[label]}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="pipeline directories (e.g. model-best)")
    parser.add_argument("--corpus", type=Path, default=DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for model in args.models:
        scores = char_offset_scores(model, args.corpus)
        cells = " | ".join(f"{label} P {s['p']:.2f} R {s['r']:.2f} **F {s['f']:.2f}** ({s['n_gold']} gold)"
                           for label, s in scores.items())
        print(f"| {model} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
