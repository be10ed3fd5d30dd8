"""Corpus-aware linking benchmark (issue 7): NCBI-disease dev and BC5CDR-disease dev against MEDIC,
Acc@1/Acc@5 (SapBERT protocol), exact (`Flat`) search, all in one run, for

- encoders: base MiniLM, SAP-MiniLM (`--sap-encoder DIR`, e.g. the output of `benchmarks/sap.py`,
  or `--pretrain-steps N` to pretrain here) and the fine-tuned encoder (`spacy_el.sap.finetune`,
  started from SAP-MiniLM when there is one, else from base MiniLM);
- protocols: plain MEDIC, and MEDIC + the corpus's own train mentions as aliases
  (`ConceptIndex.add_aliases`, SapBERT's evaluation dictionaries);
- with and without abbreviation resolution: `el_abbreviation_detector` on the full PubTator text,
  and a mention that is a defined short form is linked by its long form's text;
- with and without the corpus prior (`build-index --prior-from TRAIN`): concepts ranked by
  cosine + 0.02 · log(1 + the concept's train mentions), which settles MEDIC's same-text names.

Evaluation is `spacy_el.linker.link.evaluate_linking` (what `spacy-el evaluate-linking
[--resolve-abbreviations]` runs). Dev mentions are never
used for training, aliases or model selection.

Fine-tuning trains one encoder on the union of both corpora's train mentions (NCBI all types,
BC5CDR `Disease`; no PMID is shared with either dev set) for a fixed number of epochs (no
early stopping on the dev sets the table reports), with hard negatives refreshed each epoch over
all of MEDIC. On a quiet 2-core CPU one MEDIC pass (76k names, torch fp32) takes ~3 min and an
epoch of fine-tuning ~2.5 min.

    python benchmarks/corpus_linking.py --out /tmp/corpus_bench [--sap-encoder DIR | --pretrain-steps N] [--write-results]

Results of finished stages are kept in OUT/results.json; a restarted run skips them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from spacy_el.corpora.pubtator import PubTatorCorpus, read_pubtator
from spacy_el.build import corpus_prior, mention_alias_table
from spacy_el.kb.index import DEFAULT_PRIOR_WEIGHT, ConceptIndex
from spacy_el.kb.readers import read_medic
from spacy_el.kb.table import ConceptTable
from spacy_el.linker.link import evaluate_linking
from spacy_el.models import minilm_dir
from spacy_el.sap.encoder import SapEncoder
from report import add_data_arg, data_dir, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = "## Corpus-aware linking"
DATA = data_dir()
CORPORA = {  # name: (train, dev, types)
    "NCBI-disease": (DATA / "ncbi_disease" / "NCBItrainset_corpus.txt",
                     DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", None),
    "BC5CDR-disease": (DATA / "bc5cdr" / "CDR_TrainingSet.PubTator.txt",
                       DATA / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", ["Disease"]),
}


def evaluate_encoder(name: str, encoder: SapEncoder, plain: ConceptIndex, log) -> dict:
    """All rows of one encoder: corpus × dictionary (± train mentions, ± prior) × abbreviations."""
    vectors = plain.cpu_index.reconstruct_n(0, plain.cpu_index.ntotal)
    rows = {}
    for corpus_name, (train, dev, types) in CORPORA.items():
        with_aliases = ConceptIndex.from_vectors(plain.table, vectors, "Flat", encoder=encoder)
        added = with_aliases.add_aliases(mention_alias_table([train], types), encoder)
        prior = corpus_prior([train], types)
        for protocol, index in (("MEDIC", plain), ("MEDIC + train mentions", with_aliases)):
            index.set_prior(prior, [train])
            for weight in (0.0, DEFAULT_PRIOR_WEIGHT):
                index.set_prior_weight(weight)
                dictionary = protocol + (" + prior" if weight else "")
                base = evaluate_linking(dev, encoder, index, types=types)
                abbr = evaluate_linking(dev, encoder, index, types=types, resolve_abbreviations=True)
                n_abbr = abbr["n_abbreviations_resolved"]
                rows[f"{corpus_name}|{dictionary}"] = {
                    "plain": base, "abbreviations": abbr, "n_abbreviations": n_abbr,
                    "n_aliases_added": added if index is with_aliases else 0,
                    "prior": dict(index.meta["prior"]) if weight else None}
                log(f"{name} {corpus_name} {dictionary}: Acc@1 {base['acc@1']:.2f} (abbr {abbr['acc@1']:.2f}) "
                    f"Acc@5 {base['acc@5']:.2f} (abbr {abbr['acc@5']:.2f}); n={base['n']}, "
                    f"{base['n_missing_from_kb']} gold absent from KB, {n_abbr} short forms resolved")
    return rows


def joint_train_corpus() -> PubTatorCorpus:
    """Both corpora's train documents (evaluated types only) as one corpus."""
    parts = [read_pubtator(train, types=types) for train, _, types in CORPORA.values()]
    return PubTatorCorpus(docs=[d for c in parts for d in c.docs], n_nil=sum(c.n_nil for c in parts),
                          n_mentions=sum(c.n_mentions for c in parts),
                          path="+".join(Path(c.path).name for c in parts))


def sap_encoder(args, medic: ConceptTable, opts: dict, res: dict, save) -> Path:
    """The given SAP encoder, or one pretrained here for `--pretrain-steps` on MEDIC pairs."""
    if args.sap_encoder is not None:
        res["info"]["pretrain"] = {"encoder": str(args.sap_encoder)}
        return args.sap_encoder
    from spacy_el.sap.pairs import make_pairs
    from spacy_el.sap.config import TrainConfig
    from spacy_el.sap.pretrain import random_batches
    from spacy_el.sap.train import SynonymPair, train_encoder

    sap_dir = args.out / "sap" / "encoder"
    if not sap_dir.exists():
        t = time.perf_counter()
        examples = [SynonymPair(*p) for p in make_pairs(medic, max_pairs_per_concept=50, seed=0)]
        train_encoder(SapEncoder.load(args.base, **opts), random_batches(examples, 64, 0),
                      TrainConfig(max_steps=args.pretrain_steps, lr=args.pretrain_lr, warmup_steps=10,
                                  checkpoint_every=25, loss=args.loss),
                      args.out / "sap", resume=True)
        res["info"]["pretrain"] = {"steps": args.pretrain_steps, "batch_size": 64, "lr": args.pretrain_lr,
                                   "loss": args.loss,
                                   "seconds": time.perf_counter() - t}
        save()
    return sap_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arg(ap)
    ap.add_argument("--out", type=Path, default=Path("/tmp/corpus_bench"))
    ap.add_argument("--medic", type=Path, default=DATA / "dictionaries" / "medic_06Jul2012.txt")
    ap.add_argument("--base", default=str(minilm_dir()), help="base encoder (local dir or hub name)")
    ap.add_argument("--sap-encoder", type=Path, default=None,
                    help="SAP-pretrained encoder dir (benchmarks/sap.py writes OUT/encoder); "
                         "without it a short pretraining run (--pretrain-steps) makes one")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="without --sap-encoder: pretrain this many steps here (0: no SAP rows, fine-tune base)")
    ap.add_argument("--pretrain-lr", type=float, default=2e-5)
    ap.add_argument("--loss", default="ntxent", help="pretraining and fine-tuning loss: ntxent or multi_similarity")
    ap.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs (0: no fine-tuned rows)")
    ap.add_argument("--ft-max-steps", type=int, default=None, help="stop fine-tuning after this many steps")
    ap.add_argument("--ft-batch-size", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=5e-5)
    ap.add_argument("--ft-negatives", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-results", action="store_true", help=f"replace `{SECTION}` in RESULTS.md")
    ap.add_argument("--render", action="store_true", help="only print (and write) the table of OUT/results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "results.json"
    res = json.loads(state_path.read_text()) if state_path.exists() else {"stages": {}, "info": {}}

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def save() -> None:
        state_path.write_text(json.dumps(res, indent=2))

    if not args.render:
        t_run = time.perf_counter()
        medic = read_medic(args.medic)
        opts = {"num_threads": args.threads}

        def stage(key: str, encoder: SapEncoder) -> None:
            if key in res["stages"]:
                return
            t = time.perf_counter()
            plain = ConceptIndex.build(medic, encoder, "Flat", batch_size=256)
            kb_s = time.perf_counter() - t
            log(f"{key}: MEDIC index ({len(plain)} names) in {kb_s:.0f}s")
            if key not in res["stages"]:
                res["stages"][key] = {"rows": evaluate_encoder(key, encoder, plain, log), "kb_seconds": kb_s,
                                      "seconds": time.perf_counter() - t}
                save()

        base = SapEncoder.load(args.base, **opts)
        stage("base MiniLM", base)
        del base

        start_dir, start_name = Path(args.base), "base"
        if args.sap_encoder is not None or args.pretrain_steps > 0:
            start_dir, start_name = sap_encoder(args, medic, opts, res, save), "SAP"
            stage("SAP-MiniLM", SapEncoder.load(start_dir, **opts))

        from spacy_el.sap.finetune import finetune
        from spacy_el.sap.config import TrainConfig

        ft_out = args.out / "finetuned"
        if args.ft_epochs > 0 and not (ft_out / "finetune.json").exists():
            t = time.perf_counter()
            train = joint_train_corpus()
            config = TrainConfig(epochs=args.ft_epochs, max_steps=args.ft_max_steps, lr=args.ft_lr, loss=args.loss,
                                 patience=None, checkpoint_every=20)
            result = finetune(train, medic, start_dir, ft_out, config=config, batch_size=args.ft_batch_size,
                              n_negatives=args.ft_negatives, resume=True, encoder_options=opts)
            res["info"]["finetune"] = {"steps": result.train.steps, "seconds": time.perf_counter() - t,
                                       "stats": {k: v for k, v in vars(result.stats).items() if k != "missing_ids"},
                                       "epochs": args.ft_epochs, "max_steps": args.ft_max_steps,
                                       "batch_size": args.ft_batch_size,
                                       "lr": args.ft_lr, "negatives": args.ft_negatives, "start": start_name,
                                       "loss": args.loss,
                                       "loss_first_last_20": [float(np.mean(result.train.losses[:20])),
                                                              float(np.mean(result.train.losses[-20:]))]}
            log(f"fine-tuned: {res['info']['finetune']}")
            save()
        if args.ft_epochs > 0:
            stage(f"{res['info']['finetune']['start']} + fine-tuned", SapEncoder.load(ft_out / "encoder", **opts))
        res["info"]["run_seconds"] = res["info"].get("run_seconds", 0) + time.perf_counter() - t_run
        res["info"]["date"] = dt.date.today().isoformat()
        res["info"]["command"] = "python benchmarks/corpus_linking.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("write_results", "render", "out", "medic", "base") and v is not None)
        save()
    block = markdown(res, args)
    print(block)
    if args.write_results:
        write_section(HERE / "RESULTS.md", SECTION, block)


def markdown(res: dict, args) -> str:
    info = res["info"]
    lines = [
        SECTION, "",
        f"`{info.get('command', 'python benchmarks/corpus_linking.py')}` — one run, "
        f"{info.get('date', dt.date.today().isoformat())}; machine: 2-core CPU "
        f"(load average in the notes), no GPU; {args.threads} torch threads; Python {platform.python_version()}; "
        f"total {info.get('run_seconds', 0) / 60:.0f} min.",
        "",
        "Dev mentions against MEDIC (06Jul2012, 76k names of 11.9k concepts), exact `Flat` search, SapBERT "
        "protocol (`evaluate_linking`, as `spacy-el evaluate-linking`). *+ train mentions*: the corpus's "
        "distinct normalised train mentions added as aliases of their gold concepts. *abbr*: mentions that are "
        "short forms defined in the abstract (`el_abbreviation_detector`) are linked by their long form. *+ prior*: "
        f"concepts ranked by cosine + {DEFAULT_PRIOR_WEIGHT} · log(1 + the concept's gold mentions in the corpus's "
        "*train* set) (`build-index --prior-from`); no dev mention is used.",
        "",
        "| encoder | corpus (dev) | dictionary | Acc@1 | Acc@5 | Acc@1 abbr | Acc@5 abbr |",
        "|---|---|---|---|---|---|---|",
    ]
    for enc, st in res["stages"].items():
        for key, row in st["rows"].items():
            corpus, protocol = key.split("|")
            p, a = row["plain"], row["abbreviations"]
            lines.append(f"| {enc} | {corpus} | {protocol} | {p['acc@1']:.2f} | {p['acc@5']:.2f} | "
                         f"{a['acc@1']:.2f} | {a['acc@5']:.2f} |")
    lines.append("")
    any_rows = next(iter(res["stages"].values()), {"rows": {}})["rows"]
    for key, row in any_rows.items():
        corpus, protocol = key.split("|")
        p = row["plain"]
        if row.get("prior"):
            pr = row["prior"]
            lines.append(f"- {corpus}, {protocol}: prior from {', '.join(pr['files'])}, {pr['n_mentions']} train "
                         f"mentions over {pr['n_concepts']} MEDIC concepts ({pr['n_mentions_absent_from_kb']} "
                         "mentions of concepts absent from MEDIC left out).")
            continue
        lines.append(f"- {corpus}, {protocol}: {p['n']} queries, {p['n_missing_from_kb']} with gold ids absent "
                     f"from the dictionary (kept in the denominator), {p['n_nil_skipped']} NIL skipped, "
                     f"{row['n_abbreviations']} short forms resolved; aliases added: {row['n_aliases_added']}.")
    pre, ft = info.get("pretrain", {}), info.get("finetune")
    if "steps" in pre:
        lines.append(f"- SAP-MiniLM: no SAP benchmark encoder was available; pretrained here on MEDIC pairs "
                     f"for {pre['steps']} steps (batch 64, lr {pre['lr']}, loss {pre.get('loss', 'multi_similarity')}), "
                     f"{pre['seconds'] / 60:.1f} min.")
    elif pre:
        lines.append(f"- SAP-MiniLM: the encoder of `benchmarks/sap.py` ({pre['encoder']}).")
    if ft:
        s = ft["stats"]
        cap = f" (capped at {ft['max_steps']} steps)" if ft.get("max_steps") else ""
        lines.append(
            f"- Fine-tuning (from {ft['start']}): one encoder on NCBI train (all types) + BC5CDR train (Disease), "
            f"{s['n_examples']} "
            f"distinct (mention, concept) examples ({s['n_missing_from_kb']} mentions with ids absent from MEDIC, "
            f"{s['n_multi_concept']} spanning several concepts: not trained on); loss {ft.get('loss', 'multi_similarity')}; "
            f"hard negatives refreshed each epoch over all of MEDIC; {ft['epochs']} epoch(s)"
            f"{cap}, batch "
            f"{ft['batch_size']}, lr {ft['lr']}, {ft['negatives']} hard negatives per mention, {ft['steps']} steps, "
            f"{ft['seconds'] / 60:.1f} min; loss {ft['loss_first_last_20'][0]:.3f} → "
            f"{ft['loss_first_last_20'][1]:.3f} (mean of first/last 20 steps).")
    for key in ("outcome", "note"):
        if info.get(key):
            lines.append(f"- {key.capitalize()}: {info[key]}")
    for enc, st in res["stages"].items():
        lines.append(f"- {enc}: MEDIC embedding {st['kb_seconds'] / 60:.1f} min, all its rows "
                     f"{st['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
