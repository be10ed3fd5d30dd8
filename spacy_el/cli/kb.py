"""Concept index and linking commands: `build-index`, `link`, `evaluate-linking`, `query`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from spacy_el.cli import app, fail
from spacy_el.cli.options import KbFormat, Types
from spacy_el.io import InputError


@app.command("build-index")
def build_index_command(
    kb: Path = typer.Argument(..., help="KB file: MEDIC, OBO (.obo/.obo.gz) or TSV (concept_id TAB name)"),
    encoder_dir: str = typer.Argument(..., help="Encoder: a SapEncoder/HF directory or a hub name"),
    output_dir: Path = typer.Argument(..., help="Index directory to write (index.faiss, columns/, meta.json)"),
    fmt: KbFormat = "auto",
    index_type: str = typer.Option("Flat", "--index-type",
                                   help="FAISS index_factory string: Flat, HNSW32, IVF1024,PQ64,RFlat, PCA256,SQ8…"),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF lists searched (default max(8, nlist/16))"),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW search depth (default 128)"),
    refine_k_factor: Optional[int] = typer.Option(None, "--refine-k-factor",
                                                  help="RFlat: candidates re-ranked exactly per result (default 4)"),
    add_mentions: List[Path] = typer.Option([], "--add-mentions",
                                            help="PubTator TRAIN file whose mentions become aliases (repeatable)"),
    mention_types: List[str] = typer.Option([], "--mention-types",
                                            help="With --add-mentions/--prior-from: keep only these mention types, e.g. Disease"),
    prior_from: List[Path] = typer.Option([], "--prior-from",
                                          help="PubTator TRAIN file whose gold-concept counts rank near-ties "
                                               "(corpus prior; repeatable)"),
    prior_weight: Optional[float] = typer.Option(None, "--prior-weight",
                                                 help="Weight of log(1 + train mentions) added to the cosine "
                                                      "(default 0.02; 0 = off)"),
    merge: List[Path] = typer.Option([], "--merge",
                                     help="Second KB whose names join the concepts its cross-references name, "
                                          "e.g. the Disease Ontology into MEDIC (repeatable)"),
    merge_format: str = typer.Option("obo-xrefs", "--merge-format",
                                     help="obo-xrefs (OBO with MESH/OMIM xrefs), medic or tsv (own ids are MeSH/OMIM)"),
    store_vectors: bool = typer.Option(False, "--store-vectors",
                                       help="Also keep every name vector on disk (float16) and rescore a compressed "
                                            "index's candidates exactly (PQ/SQ/PCA types)"),
    batch_size: int = typer.Option(256, "--batch-size", help="Names per encoder batch"),
    use_gpu: str = typer.Option("auto", "--use-gpu", help="auto, true or false (FAISS on GPU)"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT_DIR even if it holds files but no index"),
) -> None:
    """Embed every KB name (plus train mentions as aliases) and write a FAISS concept index."""
    from spacy_el.build import build_index
    from spacy_el.io import check_output_dir

    try:
        check_output_dir(output_dir, "meta.json", "a concept index", force)
        index = build_index(kb, encoder_dir, output_dir, kb_format=fmt, index_type=index_type,
                            add_mentions=add_mentions, mention_types=mention_types or None, prior_from=prior_from,
                            prior_weight=prior_weight, nprobe=nprobe, ef_search=ef_search,
                            refine_k_factor=refine_k_factor, batch_size=batch_size, use_gpu=use_gpu,
                            show_progress=True, merge=merge, merge_format=merge_format, store_vectors=store_vectors)
    except InputError as err:
        raise fail(err) from None
    meta = index.meta
    for m in meta["build"].get("merge", []):
        typer.echo(f"Merged {m['source']}: {m['n_names_added']} names added to the concepts of "
                   f"{m['n_terms_matched']} of its {m['n_terms']} terms; {m['n_xrefs_unmatched']} of "
                   f"{m['n_xrefs']} cross-references matched no concept (e.g. {', '.join(m['unmatched_examples'][:3])})")
    typer.echo(f"Indexed {meta['n_names']} names of {meta['n_concepts']} concepts ({index_type}, "
               f"{meta['build']['names_per_second']:.0f} names/s; sources {meta['sources']}) → {output_dir}")


def _texts(text: Optional[str], file: Optional[Path]) -> list[tuple[str, str]]:
    """(where, text) per text to link: the argument, or each non-blank line of the file or stdin."""
    from spacy_el.io import read_lines

    if text is not None:
        return [("TEXT", text)]
    lines = read_lines(file) if file is not None else enumerate(sys.stdin, start=1)
    source = str(file) if file is not None else "stdin"
    return [(f"{source}, line {n}", line.strip()) for n, line in lines if line.strip()]


def _check_lengths(texts: list[tuple[str, str]], max_length: int) -> None:
    """spaCy refuses a text longer than `nlp.max_length` deep inside `nlp.pipe`: name it first."""
    for where, text in texts:
        if len(text) > max_length:
            raise InputError(f"{where}: a text of {len(text):,} characters, longer than the pipeline's max_length "
                             f"({max_length:,}); split it into shorter texts, or raise the limit with --max-length")


@app.command("link")
def link_command(
    model: str = typer.Argument(..., help="Pipeline: installed package name or directory"),
    text: Optional[str] = typer.Argument(None, help="Text to link (else --file, else stdin, one text per line)"),
    file: Optional[Path] = typer.Option(None, "--file", help="Texts, one per line"),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a displaCy page of the links"),
    out_format: str = typer.Option("jsonl", "--format", help="jsonl (one record per text) or table"),
    batch_size: int = typer.Option(64, "--batch-size"),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1,
                                             help="Longest text in characters (default: the pipeline's "
                                                  "nlp.max_length, spaCy's 1,000,000)"),
) -> None:
    """Find and link entities: JSONL of entities with id, name, score and candidates."""
    import spacy

    from spacy_el.linker.display import write_html
    from spacy_el.linker.link import doc_record, records_table

    if out_format not in ("jsonl", "table"):
        raise fail(InputError(f"--format {out_format!r}: use jsonl or table"))
    try:
        texts = _texts(text, file)
        nlp = spacy.load(model)
        if max_length is not None:
            nlp.max_length = max_length
        _check_lengths(texts, nlp.max_length)
        docs = nlp.pipe((t for _, t in texts), batch_size=batch_size)
        if html is not None:  # the page needs every doc
            docs = list(docs)
            write_html(docs, html)
        records = (doc_record(doc) for doc in docs)
        if out_format == "table":
            typer.echo(records_table(records))
        else:
            for record in records:
                typer.echo(json.dumps(record, ensure_ascii=False))
    except (InputError, OSError) as err:
        raise fail(err) from None


@app.command("evaluate-linking")
def evaluate_linking_command(
    corpus: Path = typer.Argument(..., help="PubTator file with gold concept ids (e.g. a dev set)"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder directory or hub name"),
    index: Optional[Path] = typer.Option(None, "--index", help="Index directory (built with that encoder)"),
    pipeline: Optional[str] = typer.Option(None, "--pipeline",
                                           help="Also score this pipeline end to end: mention spans, mention linking and "
                                                "document concepts P/R/F, words/s"),
    types: Types = [],
    label: Optional[str] = typer.Option(None, "--label", help="NER label of the gold mentions (e.g. Disease)"),
    gold_ents: bool = typer.Option(False, "--gold-ents", help="Pipeline: link the gold spans (skip NER)"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the scores as JSON"),
    abbreviations: bool = typer.Option(False, "--resolve-abbreviations",
                                       help="Acc@k: link short forms defined in the abstract by their long form"),
    prior_weight: Optional[float] = typer.Option(None, "--prior-weight",
                                                 help="Acc@k: override the index's corpus-prior weight (0 = off)"),
    thresholds: str = typer.Option("", "--thresholds",
                                   help="Pipeline: also score it at each of these NIL thresholds of its sap_linker, "
                                        "e.g. 0.6,0.7,0.8 (calibrate `[components.sap_linker] threshold` on dev)"),
) -> None:
    """Acc@1/Acc@5 on PubTator mentions (SapBERT protocol) and, with --pipeline, end-to-end scores.

    The NIL threshold (best cosine below it: no link) suits one encoder and not another (a fine-tuned
    encoder puts its right answers at higher cosines), so `--thresholds` scores a pipeline at several
    and names the best by document-concept F."""
    from spacy_el.io import atomic_write
    from spacy_el.linker.link import best_threshold, evaluate

    try:
        sweep = [float(t) for t in thresholds.split(",") if t.strip()]
    except ValueError:
        raise fail(InputError(f"--thresholds {thresholds!r}: give numbers separated by commas, "
                              "e.g. 0.6,0.7,0.8")) from None
    try:
        scores = evaluate(corpus, encoder=encoder, index=index, pipeline=pipeline, types=types or None, label=label,
                          gold_ents=gold_ents, resolve_abbreviations=abbreviations, prior_weight=prior_weight,
                          thresholds=sweep)
    except (InputError, OSError) as err:
        raise fail(err) from None
    if output is not None:
        with atomic_write(output) as f:
            json.dump(scores, f, indent=2)
    if "linking" in scores:
        s = scores["linking"]
        typer.echo(f"Acc@1 {s['acc@1']:.2f}  Acc@5 {s['acc@5']:.2f}  over {s['n']} mentions "
                   f"({s['n_missing_from_kb']} with gold ids absent from the KB, {s['n_nil_skipped']} NIL skipped)")
    if "pipeline" in scores:
        s = scores["pipeline"]
        ner = f"  ents_f {s['ents_f']:.3f}" if "ents_f" in s else ""
        typer.echo(f"nel_micro_p {s['nel_micro_p']:.3f}  nel_micro_r {s['nel_micro_r']:.3f}  "
                   f"nel_micro_f {s['nel_micro_f']:.3f}{ner}  ({s['n_docs']} docs)")
        for key, name in (("spans", "mention spans"), ("linking", "mention linking"),
                          ("doc_concepts", "document concepts")):
            g = s[key]
            typer.echo(f"{name:<18} P {g['p']:6.2f}  R {g['r']:6.2f}  F {g['f']:6.2f}  "
                       f"({g['n_pred']} predicted, {g['n_gold']} gold)")
        m, w = s["doc_concept_errors"]["missed"], s["doc_concept_errors"]["wrong"]
        typer.echo(f"{'concepts missed':<18} untagged {m['untagged']}, boundary {m['boundary']}, linked elsewhere "
                   f"{m['linked']}; wrong: spurious span {w['spurious']}, boundary {w['boundary']}, "
                   f"gold span linked wrong {w['linked']}")
        typer.echo(f"{s['words_per_s']:.0f} words/s ({s['n_words']} tokens in {s['seconds']:.1f} s"
                   f"{', gold spans' if s['gold_ents'] else ''})")
    if "threshold_sweep" in scores:
        typer.echo("NIL threshold     doc concepts P / R / F    mention linking F")
        for value, g in scores["threshold_sweep"].items():
            d = g["doc_concepts"]
            typer.echo(f"{value:<17} {d['p']:6.2f} / {d['r']:6.2f} / {d['f']:6.2f}    {g['linking']['f']:6.2f}")
        best = best_threshold(scores["threshold_sweep"])
        typer.echo(f"best by document-concept F: {best} (set [components.sap_linker] threshold = {best})")


@app.command("query")
def query_command(
    index: Path = typer.Argument(..., help="Index directory"),
    encoder: str = typer.Argument(..., help="The encoder the index was built with"),
    compare: Optional[str] = typer.Option(None, "--compare", help="A second encoder to show side by side"),
    compare_index: Optional[Path] = typer.Option(None, "--compare-index",
                                                 help="Index of the second encoder (else built in memory)"),
    top_k: int = typer.Option(5, "--top-k"),
) -> None:
    """Type names, see the top concepts (one line per query until EOF); with --compare, two encoders."""
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.sap.encoders import load_encoder

    try:
        enc = load_encoder(encoder)
        sides = [(encoder, enc, ConceptIndex.load(index, enc))]
        if compare is not None:
            other = load_encoder(compare)
            other_index = (ConceptIndex.load(compare_index, other) if compare_index is not None else
                           ConceptIndex.build(sides[0][2].table, other, sides[0][2].meta["index_type"],
                                              show_progress=True))
            sides.append((compare, other, other_index))
    except InputError as err:
        raise fail(err) from None
    width = 60
    while True:
        try:
            text = input("query> ").strip()
        except EOFError:
            break
        if not text:
            continue
        columns = []
        for name, enc_, idx in sides:
            cands = idx.search(enc_.embed([text]), k=top_k)[0]
            columns.append([name[-width:]] + [f"{c.score:.3f} {c.concept_id} {c.name}"[:width] for c in cands])
        for row in zip(*[col + [""] * (top_k + 1 - len(col)) for col in columns]):
            typer.echo(" | ".join(cell.ljust(width) for cell in row).rstrip())


@app.command("update-index")
def update_index_command(
    index: Path = typer.Argument(..., help="Index directory to change in place (atomically)"),
    add: Optional[Path] = typer.Option(None, "--add", help="TSV of concept_id TAB name [TAB source] rows to add "
                                                           "(new concepts or new names)"),
    remove: Optional[str] = typer.Option(None, "--remove", help="Concept ids to remove: comma-separated, or a file "
                                                                "with one id per line"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="The encoder the index was built with "
                                                                  "(needed by --add and --rebuild)"),
    rebuild: bool = typer.Option(False, "--rebuild", help="Index types that cannot remove in place (HNSW, IVF, "
                                                          "RFlat): re-embed the remaining names"),
    batch_size: int = typer.Option(256, "--batch-size"),
) -> None:
    """Add and remove concepts or names in a built index, keeping table, prior, types and meta consistent."""
    from spacy_el.kb.table import ConceptTable
    from spacy_el.kb.update import read_ids, update_index
    from spacy_el.sap.encoders import load_encoder

    if add is None and remove is None:
        raise fail(InputError("nothing to do: give --add FILE and/or --remove IDS"))
    try:
        summary = update_index(index, add=ConceptTable.from_tsv(add) if add is not None else None,
                               remove=read_ids(remove) if remove is not None else (),
                               encoder=load_encoder(encoder) if encoder is not None else None,
                               rebuild=rebuild, batch_size=batch_size)
    except (InputError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"Removed {summary['removed_concepts']} concepts ({summary['removed_names']} names), added "
               f"{summary['added_names']} names in {summary['seconds']:.2f}s → {summary['n_names']} names of "
               f"{summary['n_concepts']} concepts in {index}")


@app.command("index-types")
def index_types_command(
    index: Path = typer.Argument(..., help="Index directory whose concepts get semantic types (types.tsv)"),
    mrsty: Optional[Path] = typer.Option(None, "--mrsty", help="UMLS MRSTY.RRF: TUIs and semantic groups per CUI"),
    obo: Optional[Path] = typer.Option(None, "--obo", help="Disease Ontology .obo(.gz): DO branches (also for "
                                                           "MESH/OMIM ids through its xrefs)"),
    ctd: Optional[Path] = typer.Option(None, "--ctd", help="CTD_diseases.tsv (MEDIC with tree numbers)"),
    tsv: Optional[Path] = typer.Option(None, "--tsv", help="concept_id TAB type|type rows"),
) -> None:
    """Attach semantic types to an index's concepts, for `sap_linker`'s `type_filters`."""
    from spacy_el.io import locked
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.types import ConceptTypes
    from spacy_el.umls import concept_types_from_mrsty

    sources = [s for s in (mrsty, obo, ctd, tsv) if s is not None]
    if not sources:
        raise fail(InputError("give at least one of --mrsty, --obo, --ctd, --tsv"))
    try:
        with locked(index):  # load, change and save as one step: a concurrent update is not lost
            idx = ConceptIndex.load(index, mmap=False, use_gpu=False)
            ids = list(dict.fromkeys(idx.table.ids))
            types = ConceptTypes()
            if mrsty is not None:
                types = types.merged(concept_types_from_mrsty(mrsty, concept_ids=ids))
            if obo is not None:
                types = types.merged(ConceptTypes.from_obo(obo, concept_ids=ids))
            if ctd is not None:
                types = types.merged(ConceptTypes.from_ctd_tsv(ctd).spelt_as(ids)[0])
            unmatched: list[str] = []
            if tsv is not None:
                from_tsv, unmatched = ConceptTypes.from_tsv(tsv).spelt_as(ids)
                types = types.merged(from_tsv)
            idx.types = types.restricted(ids)
            idx.save(index)
    except (InputError, OSError) as err:
        raise fail(err) from None
    if unmatched:
        shown = "; ".join(unmatched[:10]) + (f"; … ({len(unmatched)} in all)" if len(unmatched) > 10 else "")
        typer.echo(f"{tsv}: {len(unmatched)} rows match no concept of the index: {shown} (`ConceptIndex.load("
                   f"'{index}').table.ids` lists the index's ids; MESH/OMIM ids match in any spelling, e.g. D005334 or MESH:D005334)", err=True)
    typed = len(idx.types)
    typer.echo(f"{typed} of {len(ids)} concepts typed ({len(idx.types.vocabulary)} type names) → {index}/types.tsv")
