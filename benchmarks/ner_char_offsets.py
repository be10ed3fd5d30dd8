"""NER by exact character offsets over *all* gold mentions: raw PubTator abstracts (title + " " +
abstract) through each pipeline's own tokenizer, mention P/R/F per type.

spaCy's scorer on converted dev docs (what `ner_ablation.py` reports) skips gold mentions whose
offsets fall inside a token (they are marked missing at conversion), so two pipelines with
different tokenizers are not compared on the same mentions there. This is the fair comparison.

    python benchmarks/ner_char_offsets.py MODEL [MODEL …] --corpus CDR_DevelopmentSet.PubTator.txt
"""
from __future__ import annotations

import argparse
from pathlib import Path

from report import add_data_arg, data_dir  # noqa: E402

DATA = data_dir()


def char_offset_scores(model: str, corpus: Path) -> dict:
    """Per mention type: `spacy_el.evaluate.span_scores` (exact offsets and label) of the
    pipeline's `doc.ents` against that type's gold mentions."""
    import spacy

    from spacy_el.corpora.pubtator import read_pubtator
    from spacy_el.evaluate import span_scores

    docs = read_pubtator(corpus).docs
    nlp = spacy.load(model)
    gold = [(d.pmid, m.start, m.end, m.type, "") for d in docs for m in d.mentions]
    pred = [(d.pmid, e.start_char, e.end_char, e.label_, "")
            for d, doc in zip(docs, nlp.pipe((d.text for d in docs), batch_size=32)) for e in doc.ents]
    return {label: span_scores([a for a in gold if a[3] == label], [a for a in pred if a[3] == label], labels=True)
            for label in sorted({a[3] for a in gold})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arg(parser)
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
