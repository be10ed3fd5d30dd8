"""What an ensemble of several *transformer-fed* taggers would score, before building one.

`spacy-el ensemble-ner` averages the members' CRF potentials inside one pipeline, where at most
one member may read a spacy-transformers `transformer`: every listener reads the one
`doc._.trf_data`, so a second transformer would overwrite the first's output. This script runs
each trained pipeline on its own (its transformer, gazetteers and tagger), takes the tagger's
per-token emissions and CRF scores, averages them over the pipelines (as `TaggerEnsemble.v1`
does) and decodes the mean with the same BIO-constrained Viterbi, then scores it with spaCy's
NER scorer on the same dev docs as `ner_ablation.py`. With one transformer-fed member it must
give the assembled ensemble's figure (the check that it measures the same thing).

    python benchmarks/ner_mean_crf.py out_transformer_ft_chem_do_biotok/model-best \\
        out_transformer_ft_chem_do_biotok_seed1/model-best out_chem_do_biotok/model-best \\
        --dev dev_sentence_bio.spacy

Accuracy only (no speed: the pipelines run one after another).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def emissions_and_crf(model_dir: Path, gold, component: str):
    """The tagger's emissions per gold doc (its own pipeline up to the tagger) and its CRF scores."""
    import spacy

    from spacy_el.ner.distill import tagger_inputs

    nlp = spacy.load(model_dir)
    docs = tagger_inputs(nlp, gold, component)
    pipe = nlp.get_pipe(component)
    return nlp, pipe, docs, pipe.emissions(docs), pipe.crf_scores()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", type=Path, help="Trained pipelines (e.g. model-best), same labels")
    parser.add_argument("--dev", required=True, type=Path, help="Dev DocBin (as ner_ablation.py writes it)")
    parser.add_argument("--component", default="bilstm_ner")
    args = parser.parse_args()

    import spacy
    from spacy.scorer import get_ner_prf
    from spacy.tokens import DocBin
    from spacy.training import Example

    from spacy_el.ner.crf import viterbi

    gold = list(DocBin().from_disk(args.dev).get_docs(spacy.blank("en").vocab))
    runs = [emissions_and_crf(path, gold, args.component) for path in args.members]
    tags = runs[0][1].tags
    for path, run in zip(args.members, runs):
        if run[1].tags != tags:
            raise SystemExit(f"{path}: tags {run[1].tags} differ from {args.members[0]}'s {tags}")
    n = len(runs)
    mean_logits = [sum(run[3][i] for run in runs) / n for i in range(len(gold))]
    start, trans, end = (sum(run[4][k] for run in runs) / n for k in range(3))
    nlp, pipe, docs = runs[0][0], runs[0][1], runs[0][2]
    pipe.set_annotations(docs, viterbi(mean_logits, start, trans, end))
    gold_docs = list(DocBin().from_disk(args.dev).get_docs(nlp.vocab))
    scores = get_ner_prf([Example(pred, ref) for pred, ref in zip(docs, gold_docs)])
    result = {"members": [str(p) for p in args.members], "dev": str(args.dev),
              "f": scores["ents_f"], "p": scores["ents_p"], "r": scores["ents_r"],
              "per_type": {k: v["f"] for k, v in sorted(scores["ents_per_type"].items())}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
