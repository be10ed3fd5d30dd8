"""End-to-end benchmark: raw PubTator abstracts (title + " " + abstract, the pipeline's own
tokenizer) → NER → el_abbreviation_detector → sap_linker, on NCBI-disease dev and BC5CDR dev, scored
by `spacy_el.linker.link.evaluate_pipeline` (what `spacy-el evaluate-linking --pipeline` runs):

- mention spans P/R/F by exact character offsets and label;
- mention-level linking P/R/F (exact span and a concept sharing an id with the gold);
- document-level concepts P/R/F (the DNorm/TaggerOne normalisation protocol, micro-averaged);
- words/s of the whole pipeline (tokens / wall seconds of `nlp.pipe`, one process, CPU).

Peers in the same run, with the same linker: the linker on the gold spans (NER-perfect upper
bound) and a KB-dictionary NER (spaCy `PhraseMatcher` on LOWER over the linker's index names,
longest match; the lexicon-only floor).

The pipeline is `--pipeline DIR`, or `--ner DIR` (any pipeline with an NER; a linker it holds is
dropped) with `--linker DIR` (a pipeline holding a `sap_linker`) or `--encoder E --index I` (a
`sap_linker` built here). `el_abbreviation_detector` is added before the linker when missing and the
linker resolves short forms by their long form (`--keep-pipeline` runs the pipeline as it is).
Chemical rows (BC5CDR) run when the NER has a `Chemical` label and `--chemical-linker DIR` is given.

    flock -x LOCKFILE python benchmarks/end_to_end.py --pipeline training/pipeline \\
        [--out /tmp/e2e.md] [--write-results]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc
from spacy.util import filter_spans

from spacy_el.linker.link import evaluate_pipeline
from report import add_data_arg, cpu_model, data_dir, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = "## End to end"
DATA = data_dir()
CORPORA = {  # name: (dev file, mention types, label)
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None, "Disease"),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"], "Disease"),
    "BC5CDR-chemical": (DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Chemical"], "Chemical"),
}
ANCHORS = ("Published test-set figures, **not run here** (different split): TaggerOne (Leaman & Lu 2016), "
           "NCBI-disease test: NER F 82.9, normalisation (document-level concepts) F 80.7.")


# ---------------------------------------------------------------------- the dictionary NER peer
@Language.factory("e2e_kb_dictionary_ner", default_config={"label": "Disease", "min_chars": 3})
def make_dictionary_ner(nlp: Language, name: str, label: str, min_chars: int) -> "DictionaryNER":
    return DictionaryNER(nlp, label, min_chars)


class DictionaryNER:
    """Entities where a KB name matches (lower-cased tokens), the longest match winning overlaps.
    Names shorter than `min_chars` or made of stop words only ("all", "was") are left out."""

    def __init__(self, nlp: Language, label: str, min_chars: int):
        self.nlp, self.label, self.min_chars = nlp, label, min_chars
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        self.n_names = 0

    def set_names(self, names: list[str]) -> None:
        """`names`: lower-cased, filtered (`kb_names`)."""
        self.matcher.add(self.label, list(self.nlp.tokenizer.pipe(names)))
        self.n_names = len(names)

    def __call__(self, doc: Doc) -> Doc:
        spans = [doc[s:e] for _, s, e in self.matcher(doc)]
        doc.ents = [doc.char_span(s.start_char, s.end_char, label=self.label) for s in filter_spans(spans)]
        return doc


# ---------------------------------------------------------------------- pipelines
def factory_names(nlp: Language, factory: str) -> list[str]:
    return [n for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory == factory]


def ner_names(nlp: Language) -> list[str]:
    """Components that set `doc.ents` (the NER), the linker excepted."""
    return [n for n in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(n).assigns]


def ner_labels(nlp: Language) -> set[str]:
    return {label for n in ner_names(nlp) for label in getattr(nlp.get_pipe(n), "labels", ())}


def linker_source(args, which: str = "disease") -> Language:
    """A pipeline holding a sap_linker: `--linker`/`--chemical-linker`, or one built from
    `--encoder` and `--index`."""
    path = args.linker if which == "disease" else args.chemical_linker
    if path:
        return spacy.load(path)
    from spacy_el.build import index_from_dir
    from spacy_el.sap.encoders import encoder_from_path
    from spacy_el.sap.rerank.model import reranker_from_path

    nlp = spacy.blank("en")
    config = {"rerank_top_k": args.rerank_top_k}
    if args.threshold is not None:
        config["threshold"] = args.threshold
    reranker = reranker_from_path(str(args.reranker)) if args.reranker and which == "disease" else None
    nlp.add_pipe("sap_linker", config=config).initialize(encoder_loader=encoder_from_path(str(args.encoder)),
                                                         index_loader=index_from_dir(str(args.index)),
                                                         reranker_loader=reranker)
    return nlp


def assemble(args, which: str = "disease") -> tuple[Language, list[str]]:
    """The pipeline to benchmark and notes on what was changed to make it."""
    notes = []
    if args.pipeline and which == "disease":
        nlp = spacy.load(args.pipeline)
    else:
        nlp = spacy.load(args.ner or args.pipeline)
        for name in factory_names(nlp, "sap_linker"):
            nlp.remove_pipe(name)
        source = linker_source(args, which)
        src_name = factory_names(source, "sap_linker")[0]
        nlp.add_pipe(src_name, name="sap_linker", source=source)
        notes.append(f"NER from `{args.ner or args.pipeline}`, linker from "
                     f"`{(args.chemical_linker if which != 'disease' else args.linker) or args.index}`")
    linker = factory_names(nlp, "sap_linker")[0]
    if args.kb_extend and not factory_names(nlp, "kb_span_extender"):
        nlp.add_pipe("kb_span_extender", after=ner_names(nlp)[0], config={"max_extra_tokens": args.kb_extend})
        notes.append(f"`kb_span_extender` added after the NER (max_extra_tokens {args.kb_extend})")
    if args.alternatives is not None:
        from spacy_el.linker.alternatives import ALTERNATIVES_KEY

        ner = nlp.get_pipe(ner_names(nlp)[0])
        if not hasattr(ner, "alternatives_key"):
            raise SystemExit(f"--alternatives: the NER `{ner_names(nlp)[0]}` is not a bilstm_ner")
        ner.alternatives_key, ner.alternatives_min_prob = ALTERNATIVES_KEY, args.alternatives
        nlp.get_pipe(linker).cfg.update(alternatives_threshold=args.alternatives_threshold)
        notes.append(f"the tagger's alternatives with probability >= {args.alternatives} become entities at a "
                     f"cosine >= {args.alternatives_threshold}")
    if not args.keep_pipeline:
        if not factory_names(nlp, "el_abbreviation_detector"):
            nlp.add_pipe("el_abbreviation_detector", before=linker)
            notes.append("`el_abbreviation_detector` added before the linker")
        if not nlp.get_pipe(linker).cfg["resolve_abbreviations"]:
            nlp.get_pipe(linker).cfg["resolve_abbreviations"] = True
            notes.append("linker `resolve_abbreviations` switched on")
    return nlp, notes


def kb_names(nlp: Language, aliases_only: bool, min_chars: int = 3) -> list[str]:
    """The linker's index names (lower-cased; `aliases_only`: the corpus mentions added as aliases),
    without names shorter than `min_chars` or made of stop words only."""
    table = nlp.get_pipe(factory_names(nlp, "sap_linker")[0]).index.table
    names = (n for n, source in zip(table.names, table.sources) if not aliases_only or source != "kb")
    return sorted({n.lower() for n in names if len(n.strip()) >= min_chars
                   and not all(w in STOP_WORDS for w in n.lower().split())})


def add_kb_fill(nlp: Language, label: str, aliases_only: bool) -> int:
    """After the NER, spaCy's `entity_ruler` adds KB-name matches (LOWER) where the tagger found
    nothing (`overwrite_ents` off): a lexicon for the mentions the tagger misses."""
    names = kb_names(nlp, aliases_only)
    ruler = nlp.add_pipe("entity_ruler", name="kb_fill", after=ner_names(nlp)[-1],
                         config={"phrase_matcher_attr": "LOWER", "overwrite_ents": False})
    ruler.add_patterns([{"label": label, "pattern": n} for n in names])
    return len(names)


def dictionary_pipeline(nlp: Language, label: str) -> tuple[Language, int]:
    """The same pipeline with its NER replaced by the KB-dictionary matcher over the linker's names."""
    linker = factory_names(nlp, "sap_linker")[0]
    disable = [n for n in nlp.pipe_names if n != linker and n not in factory_names(nlp, "el_abbreviation_detector")]
    dict_nlp = spacy.blank(nlp.lang, vocab=nlp.vocab)
    dict_nlp.tokenizer = nlp.tokenizer
    pipe = dict_nlp.add_pipe("e2e_kb_dictionary_ner", config={"label": label})
    pipe.set_names(kb_names(nlp, aliases_only=False, min_chars=pipe.min_chars))
    for name in nlp.pipe_names:
        if name not in disable:
            dict_nlp.add_pipe(name, source=nlp)
    return dict_nlp, pipe.n_names


# ---------------------------------------------------------------------- the run
def run(args) -> dict:
    rows, notes = [], []
    nlp, assembled = assemble(args)
    notes += assembled
    labels = ner_labels(nlp)
    linker = nlp.get_pipe(factory_names(nlp, "sap_linker")[0])
    table = linker.index.table
    info = {"kb_names": len(table), "kb_concepts": table.n_concepts, "pipe_names": nlp.pipe_names,
            "ner_labels": sorted(labels), "index_meta_sources": linker.index.meta.get("sources")}
    chem_nlp = None
    for corpus, (path, types, label) in CORPORA.items():
        if args.corpora and corpus not in args.corpora:
            continue
        use = nlp
        if label == "Chemical":
            if "Chemical" not in labels or not args.chemical_linker:
                notes.append(f"{corpus} skipped: " + ("the NER has no `Chemical` label" if "Chemical" not in labels
                                                       else "no `--chemical-linker` given"))
                continue
            if chem_nlp is None:
                chem_nlp, _ = assemble(args, "chemical")
            use = chem_nlp
        if label not in labels:
            notes.append(f"{corpus}: the NER has no `{label}` label ({sorted(labels)}); its rows score 0 spans")
        dict_nlp, n_names = dictionary_pipeline(use, label)
        if args.kb_fill:
            n_fill = add_kb_fill(use, label, aliases_only=args.kb_fill == "aliases")
            for name in factory_names(use, "el_abbreviation_detector"):
                use.get_pipe(name).propagate_ents = args.propagate_ents
            s = evaluate_pipeline(use, path, types=types, label=label, batch_size=args.batch_size)
            use.remove_pipe("kb_fill")
            rows.append({"corpus": corpus, "system": f"pipeline + KB-name fill where the NER found nothing "
                                                     f"(`entity_ruler`, {args.kb_fill}, {n_fill:,} names)", "scores": s})
        for system, pipe_nlp, gold in (("pipeline (NER → abbreviations → linker)", use, False),
                                       ("linker on gold spans (NER-perfect bound)", use, True),
                                       (f"KB dictionary NER (PhraseMatcher LOWER, {n_names:,} names) → linker",
                                        dict_nlp, False)):
            for name in factory_names(pipe_nlp, "el_abbreviation_detector"):  # never adds to gold spans
                pipe_nlp.get_pipe(name).propagate_ents = args.propagate_ents and not gold
            start = time.perf_counter()
            s = evaluate_pipeline(pipe_nlp, path, types=types, label=label, gold_ents=gold, batch_size=args.batch_size)
            s["wall_s_incl_scoring"] = time.perf_counter() - start
            rows.append({"corpus": corpus, "system": system, "scores": s})
            print(f"{corpus:16s} {system[:40]:40s} spans F {s['spans']['f']:.2f}  linking F {s['linking']['f']:.2f}  "
                  f"doc concepts F {s['doc_concepts']['f']:.2f}  {s['words_per_s']:.0f} words/s", file=sys.stderr)
    return {"rows": rows, "notes": notes, "info": info}


def header(argv: list[str]) -> str:
    cpu = cpu_model()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    import torch

    return (f"`python benchmarks/end_to_end.py {shlex.join(argv)}` — "
            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; CPU: {cpu}, {os.cpu_count()} cores, no GPU "
            f"(**CPU figures**); torch threads {torch.get_num_threads()}; `uptime` at the start: {load}")


def markdown(res: dict, head: str, load_end: str) -> str:
    info = res["info"]
    lines = [SECTION, "", f"{head}; at the end: {load_end}.", "",
             f"Pipeline components: {', '.join(f'`{n}`' for n in info['pipe_names'])}; NER labels "
             f"{info['ner_labels']}; linker index {info['kb_names']:,} names of {info['kb_concepts']:,} concepts "
             f"(sources {info['index_meta_sources']}). Dev sets only; P/R/F in percent; words/s = tokens / wall "
             "seconds of `nlp.pipe` over the corpus (tokenizer and every component that runs; one process).", "",
             "| corpus (dev) | system | spans P | spans R | spans F | linking P | linking R | linking F | "
             "doc concepts P | doc concepts R | doc concepts F | words/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["rows"]:
        s = row["scores"]
        cells = [f"{s[g][m]:.2f}" for g in ("spans", "linking", "doc_concepts") for m in ("p", "r", "f")]
        lines.append(f"| {row['corpus']} | {row['system']} | " + " | ".join(cells) + f" | {s['words_per_s']:,.0f} |")
    lines += ["", "Where the document-concept errors come from (`spacy_el.evaluate.document_concept_errors`): gold "
              "concepts *missed* because no predicted mention touches theirs (untagged), one only overlaps "
              "(boundary), or one has the exact span and another concept (linked); *wrong* predicted concepts on "
              "a span touching no gold mention (spurious), overlapping one (boundary), or on an exact gold span "
              "(linked). Untagged, spurious and boundary are the tagger's; linked is the linker's.", "",
              "| corpus (dev) | system | missed: untagged | boundary | linked | wrong: spurious | boundary | linked |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in res["rows"]:
        e = row["scores"]["doc_concept_errors"]
        cells = [e["missed"][k] for k in ("untagged", "boundary", "linked")] + \
            [e["wrong"][k] for k in ("spurious", "boundary", "linked")]
        lines.append(f"| {row['corpus']} | {row['system']} | " + " | ".join(map(str, cells)) + " |")
    lines += ["", f"- Anchors: {ANCHORS}"]
    for row in res["rows"][:1] + [r for r in res["rows"] if r["corpus"] != res["rows"][0]["corpus"]][:1]:
        s = row["scores"]
        lines.append(f"- {row['corpus']}: {s['n_docs']} abstracts, {s['n_words']:,} tokens, {s['spans']['n_gold']} "
                     f"gold mentions ({s['n_nil_skipped']} NIL mentions left out by the reader), "
                     f"{s['doc_concepts']['n_gold']} gold document concepts.")
    lines += [f"- {note}." for note in res["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arg(ap)
    ap.add_argument("--pipeline", help="A full pipeline: NER (+ el_abbreviation_detector) + sap_linker")
    ap.add_argument("--ner", help="Any pipeline with an NER (its own linker, if any, is replaced)")
    ap.add_argument("--linker", help="A pipeline holding a sap_linker (with --ner)")
    ap.add_argument("--encoder", help="With --index and --ner: build the sap_linker from these")
    ap.add_argument("--index", help="Index directory built with --encoder")
    ap.add_argument("--reranker", help="With --encoder/--index: a reranker (`train-reranker`, torch or ONNX) over the top candidates")
    ap.add_argument("--rerank-top-k", type=int, default=3, help="With --reranker: candidates it rescores")
    ap.add_argument("--threshold", type=float, default=None,
                    help="With --encoder/--index: the linker's NIL threshold on the best cosine (default: sap_linker's)")
    ap.add_argument("--alternatives", type=float, default=None, metavar="P",
                    help="bilstm_ner writes the spans its best path left out with probability >= P, and the "
                         "linker makes entities of those whose cosine reaches --alternatives-threshold")
    ap.add_argument("--alternatives-threshold", type=float, default=0.95, metavar="T")
    ap.add_argument("--kb-extend", type=int, default=0, metavar="N",
                    help="Add `kb_span_extender`: widen entities to the longest KB name (of the tagger's gazetteer) "
                         "containing them, adding at most N tokens")
    ap.add_argument("--kb-fill", choices=["all", "aliases"], default=None,
                    help="Also score the pipeline with KB-name matches added where the NER found nothing "
                         "(all index names, or only the corpus mentions added as aliases)")
    ap.add_argument("--chemical-linker", help="A pipeline holding a sap_linker over a chemical KB (BC5CDR Chemical)")
    ap.add_argument("--corpora", nargs="*", choices=list(CORPORA), help="Default: all that apply")
    ap.add_argument("--keep-pipeline", action="store_true",
                    help="Run the pipeline as it is (no el_abbreviation_detector added, no resolve_abbreviations)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--propagate-ents", action="store_true",
                    help="el_abbreviation_detector makes short forms of entity long forms entities (not on gold spans)")
    ap.add_argument("--label", default=None, help="A note for the section title (e.g. which tagger)")
    ap.add_argument("--out", type=Path, help="Write the markdown here (and the scores as OUT.json)")
    ap.add_argument("--write-results", action="store_true", help="Replace the section in benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if not args.pipeline and not (args.ner and (args.linker or (args.encoder and args.index))):
        ap.error("give --pipeline DIR, or --ner DIR with --linker DIR (or --encoder E --index I)")
    head = header(argv)
    res = run(args)
    load_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    block = markdown(res, head, load_end)
    if args.label:
        block = block.replace(SECTION + "\n", f"{SECTION}\n\n{args.label}\n", 1)
    print(block)
    if args.out:
        args.out.write_text(block, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    if args.write_results:
        write_section(HERE / "RESULTS.md", SECTION, block)


if __name__ == "__main__":
    main()
