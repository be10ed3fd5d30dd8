"""Where the errors of the alias protocol are: NCBI-disease dev and BC5CDR-disease dev against MEDIC
+ the corpus's train mentions as aliases + the corpus prior (the `MEDIC + train mentions + prior`
row of `benchmarks/corpus_linking.py`, without and with abbreviation resolution), each wrong Acc@1
query sorted by what the train set says about its (normalised) text:

- *unseen in train*: no train mention has this text, so the encoder must generalise;
- *train: other concepts only*: train annotates this text, never with a dev gold concept
  (a train/dev disagreement no context-free linker can follow, e.g. "hereditary breast cancer");
- *train: several concepts*: train annotates it with a gold concept and with others;
- *train: this concept*: train annotates it with a gold concept only (a tie or a composite).

    python benchmarks/alias_errors.py [--work /tmp/alias_errors] [--encoder DIR]

The MEDIC index is built once per work directory.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
from pathlib import Path

from spacy_el.corpora.pubtator import linking_queries, read_pubtator
from spacy_el.ids import normalize_name
from spacy_el.ids import ids_match
from spacy_el.build import corpus_prior, mention_alias_table
from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.readers import read_medic
from spacy_el.linker.link import query_texts
from spacy_el.models import minilm_dir
from spacy_el.sap.encoder import SapEncoder

from report import add_data_arg, data_dir  # noqa: E402

DATA = data_dir()
CORPORA = {
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
                     DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
                       DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"]),
}
KINDS = ("unseen in train", "train: other concepts only", "train: several concepts", "train: this concept")


def kind_of(gold: list[str], train_golds: set[tuple[str, ...]] | None) -> str:
    if not train_golds:
        return KINDS[0]
    hits = [g for g in train_golds if all(any(ids_match(x, y) for y in gold) for x in g)]
    if not hits:
        return KINDS[1]
    return KINDS[2] if len(train_golds) > len(hits) else KINDS[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(parser)
    parser.add_argument("--work", type=Path, default=Path("/tmp/alias_errors"))
    parser.add_argument("--encoder", default=str(minilm_dir()))
    parser.add_argument("--medic", type=Path, default=DATA / "dictionaries" / "medic_06Jul2012.txt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=4)
    args = parser.parse_args()
    encoder = SapEncoder.load(args.encoder, device="cpu", num_threads=args.threads)
    index_dir = args.work / f"medic_{encoder.fingerprint}"
    if not (index_dir / "meta.json").exists():
        ConceptIndex.build(read_medic(args.medic), encoder, "Flat", show_progress=True).save(index_dir)
    print(f"`python benchmarks/alias_errors.py` — {dt.date.today()}; encoder {Path(args.encoder).name}; "
          "MEDIC + train mentions + prior\n")
    print("| corpus (dev) | abbr | queries | Acc@1 | errors | " + " | ".join(KINDS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(KINDS))
    examples = {}
    for name, (train, dev, types) in CORPORA.items():
        index = ConceptIndex.load(index_dir, encoder, mmap=False)
        index.add_aliases(mention_alias_table([train], types), encoder)
        index.set_prior(corpus_prior([train], types), [str(train)])
        train_golds: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
        for q in linking_queries(read_pubtator(train, types=types)):
            train_golds[normalize_name(q.text)].add(tuple(sorted(q.gold)))
        corpus = read_pubtator(dev, types=types)
        queries = linking_queries(corpus)
        for abbr in (False, True):
            texts = query_texts(corpus, queries, abbr)  # as `evaluate_linking`
            unique = list(dict.fromkeys(texts))
            found = dict(zip(unique, index.search(encoder.embed(unique), k=5)))
            kinds: collections.Counter = collections.Counter()
            seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            for q, text in zip(queries, texts):
                best = found[text][0] if found[text] else None
                if best is not None and any(ids_match(best.concept_id, g) for g in q.gold):
                    continue
                kind = kind_of(q.gold, train_golds.get(normalize_name(q.text)))
                kinds[kind] += 1
                linked = best.concept_id if best else "nothing"
                seen[kind][f"{q.text!r} (gold {'|'.join(q.gold)}, linked {linked})"] += 1
            errors = sum(kinds.values())
            print(f"| {name} | {'yes' if abbr else 'no'} | {len(queries)} | "
                  f"{100 * (len(queries) - errors) / len(queries):.2f} | {errors} | "
                  + " | ".join(str(kinds[k]) for k in KINDS) + " |", flush=True)
            examples[f"{name}, abbr {'yes' if abbr else 'no'}"] = seen
    for name, seen in examples.items():
        print(f"\n{name}, most frequent errors of each kind:")
        for kind in KINDS:
            top = ", ".join(f"{text} ×{n}" for text, n in seen[kind].most_common(args.examples))
            print(f"- {kind}: {top or '—'}")


if __name__ == "__main__":
    main()
