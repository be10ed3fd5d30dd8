"""Choosing `sap_linker`'s default NIL threshold on dev data: what each threshold costs on real
mentions and what it buys on spans that are not mentions.

    python benchmarks/nil_threshold.py --index /tmp/linker_bench15/"index_base MiniLM_Flat" [--encoder DIR]

For NCBI-disease dev and BC5CDR-disease dev, against the MEDIC index given (built with the
encoder given; `benchmarks/linker.py` leaves one in its work directory) and against the same
index plus the corpus's train mentions as aliases:

- *real mentions*: every gold span set as `doc.ents` and linked end to end by `sap_linker`
  (`nlp.pipe`, threshold 0, so the best candidate and its cosine are kept); at threshold t a
  mention is right when its best concept scores ≥ t and shares an id with the gold field.
  A NIL on a real mention counts as wrong. Acc@1 over all gold spans.
- *junk spans*: spans of the same dev abstracts that are not mentions: 1–3-token word n-grams
  outside every gold span, with no word that occurs in any gold mention of the corpus (so no
  unannotated disease word slips in), non-overlapping, a seeded sample (`--junk-per-doc`). The
  share left unlinked (NIL) per threshold. Entities of only punctuation or whitespace are not
  in this sample: the linker never links them, at any threshold.

The chosen default is the largest threshold on the grid that costs at most `--max-cost` Acc@1
points (against threshold 0) in every corpus × dictionary setting.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import spacy
from spacy.tokens import Doc, Span

from spacy_el.build import mention_alias_table
from spacy_el.corpora.pubtator import read_pubtator
from spacy_el.ids import ids_match
from spacy_el.kb.index import ConceptIndex
from spacy_el.linker.link import pubtator_docs
from spacy_el.models import minilm_dir
from spacy_el.sap.encoders import load_encoder
from corpus_linking import CORPORA  # noqa: E402  (the dev sets the linking tables use)
from report import cpu_model  # noqa: E402

GRID = [round(0.05 * i, 2) for i in range(0, 20)]
_WORD = re.compile(r"^[A-Za-z][A-Za-z\-']*$")


def junk_spans(doc: Doc, gold_words: set[str], per_doc: int, rng: random.Random) -> list[Span]:
    """Up to `per_doc` non-overlapping 1–3-token word n-grams outside `doc.ents`, none of whose
    words is a gold-mention word."""
    taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    starts = list(range(len(doc)))
    rng.shuffle(starts)
    out: list[Span] = []
    for start in starts:
        if len(out) >= per_doc:
            break
        end = start + rng.randint(1, 3)
        if end > len(doc) or any(i in taken for i in range(start, end)):
            continue
        words = doc[start:end]
        if not all(_WORD.match(t.text) and t.lower_ not in gold_words for t in words):
            continue
        out.append(Span(doc, start, end, label="JUNK"))
        taken.update(range(start, end))
    return sorted(out, key=lambda s: s.start)


def best_scores(nlp, docs: list[Doc]) -> list[tuple[str | None, float]]:
    """(best concept id, its cosine) per entity, in order; (None, -1) for an entity with no candidate."""
    out = []
    for doc in nlp.pipe(docs, batch_size=64):
        for ent in doc.ents:
            cands = ent._.kb_candidates or []
            out.append((cands[0].concept_id, cands[0].score) if cands else (None, -1.0))
    return out


def sweep(nlp, train: Path, dev: Path, types, per_doc: int, seed: int) -> dict:
    """Per threshold of GRID: real-mention Acc@1 and the junk share left NIL, on one corpus."""
    corpus = read_pubtator(dev, types=types)
    pairs = pubtator_docs(nlp, corpus, with_ents=True)
    gold_words = {w.lower() for m in read_pubtator(train, types=types).docs for x in m.mentions
                  for w in re.findall(r"[A-Za-z]+", x.text)}
    gold_words |= {w.lower() for m in corpus.docs for x in m.mentions for w in re.findall(r"[A-Za-z]+", x.text)}
    real = best_scores(nlp, [doc.copy() for doc, _ in pairs])
    gold = [g[3] for _, golds in pairs for g in golds]
    assert len(real) == len(gold)
    rng = random.Random(seed)
    junk_docs = []
    for doc, _ in pairs:
        junk = junk_spans(doc, gold_words, per_doc, rng)
        copy = nlp.make_doc(doc.text)
        copy.ents = [Span(copy, s.start, s.end, label="JUNK") for s in junk]
        junk_docs.append(copy)
    junk = best_scores(nlp, junk_docs)
    real_scores = np.array([s for _, s in real])
    right = np.array([cid is not None and ids_match(cid, g) for (cid, _), g in zip(real, gold)])
    junk_scores = np.array([s for _, s in junk])
    rows = [{"threshold": t, "acc@1": 100 * float((right & (real_scores >= t)).mean()),
             "junk_nil": 100 * float((junk_scores < t).mean()),
             "real_nil": 100 * float((real_scores < t).mean())} for t in GRID]
    examples = sorted({s.text for d in junk_docs for s in d.ents})
    return {"n_real": len(real), "n_junk": len(junk), "rows": rows,
            "junk_examples": random.Random(seed).sample(examples, min(12, len(examples))),
            "junk_cos_median": float(np.median(junk_scores)), "real_cos_median": float(np.median(real_scores))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="a MEDIC concept index directory (Flat)")
    ap.add_argument("--encoder", default=str(minilm_dir()), help="the encoder the index was built with")
    ap.add_argument("--junk-per-doc", type=int, default=4)
    ap.add_argument("--max-cost", type=float, default=0.5, help="Acc@1 points a default may cost")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    encoder = load_encoder(args.encoder, num_threads=args.threads)
    results = {}
    for corpus_name, (train, dev, types) in CORPORA.items():
        for aliases in (False, True):
            index = ConceptIndex.load(args.index, encoder, mmap=False)
            if aliases:
                index.add_aliases(mention_alias_table([train], types), encoder)
            nlp = spacy.blank("en")
            linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 1})
            linker.set_parts(encoder, index)
            key = f"{corpus_name}, MEDIC{' + train mentions' if aliases else ''}"
            results[key] = sweep(nlp, train, dev, types, args.junk_per_doc, args.seed)
            print(f"[{time.strftime('%H:%M:%S')}] {key}: {results[key]['n_real']} mentions, "
                  f"{results[key]['n_junk']} junk spans", file=sys.stderr, flush=True)
    chosen = max(t for i, t in enumerate(GRID)
                 if all(r["rows"][0]["acc@1"] - r["rows"][i]["acc@1"] <= args.max_cost for r in results.values()))
    keys = list(results)
    print(f"`python benchmarks/nil_threshold.py --index {args.index} --encoder {args.encoder}` — "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, "
          f"CPU only; load average {load0:.1f} at the start; {time.perf_counter() - t0:.0f} s.\n")
    print("Acc@1 of real mentions (gold spans, NIL = wrong) / share of junk spans left NIL, in %:\n")
    print("| threshold | " + " | ".join(keys) + " |")
    print("|---:|" + "---|" * len(keys))
    for i, t in enumerate(GRID):
        cells = [f"{results[k]['rows'][i]['acc@1']:.2f} / {results[k]['rows'][i]['junk_nil']:.1f}" for k in keys]
        mark = " **(default)**" if t == chosen else ""
        print(f"| {t:.2f}{mark} | " + " | ".join(cells) + " |")
    print()
    for k in keys:
        r = results[k]
        print(f"- {k}: {r['n_real']} gold spans (median best cosine {r['real_cos_median']:.3f}), {r['n_junk']} "
              f"junk spans (median best cosine {r['junk_cos_median']:.3f}), e.g. {', '.join(r['junk_examples'][:8])}")
    print(f"\nChosen: {chosen:.2f}, the largest threshold costing ≤ {args.max_cost} Acc@1 in every setting.")


if __name__ == "__main__":
    main()
