"""Training the cross-encoder reranker on annotated train mentions, in the project's training loop
(`spacy_el.sap.train.train_encoder`: seeded, resumable checkpoints, dev early stopping, progress).

Each train mention (composite ones through their lined-up parts) becomes one group: its gold
concept and the bi-encoder index's top-k wrong concepts, the confusions the reranker will be
asked to settle at serving time. An encoder fine-tuned on those very mentions ranks their gold
first and leaves nothing to learn, so each train file may get its candidates from its own
cross-fitted linker (`train_linkers`: encoders fine-tuned on the other folds, `spacy-el
split-folds`). The bi-encoders are fixed while the reranker trains, so the candidates are
computed once; each epoch reshuffles the groups and each group's candidates. The loss is the softmax cross-
entropy of the gold candidate within its group (listwise, as in BLINK's and SapBERT-era
cross-encoder rerankers). After each epoch the dev mentions' top-k are rescored, the weight of the
combination `cosine + weight × score` is tuned on a grid that includes 0 (so dev is never ranked
worse than by the bi-encoder), and the best reranker is kept with its weight.

With a `teacher` (a stronger reranker, e.g. a 2-layer pair cross-encoder distilled into a 1-layer
listwise one for speed), each group's loss also pulls the student's softmax over the candidates
towards the teacher's (KL divergence, weighted by `soft_weight`): the teacher's scores say how
wrong each negative is, which the gold label alone does not. The teacher scores every group once,
before training.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from spacy_el.corpora.pubtator import PubTatorCorpus, linking_queries, read_pubtator
from spacy_el.evaluate import accuracy_at_k
from spacy_el.ids import id_owners, ids_match
from spacy_el.io import InputError, atomic_write
from spacy_el.kb.index import Candidate, ConceptIndex
from spacy_el.models import Encoder
from spacy_el.sap.rerank.config import RERANK_CONFIG
from spacy_el.sap.rerank.context import candidate_text, concept_names, mention_in_context
from spacy_el.sap.rerank.cross_encoder import CrossEncoderReranker
from spacy_el.sap.rerank.policy import rerank
from spacy_el.sap.rerank.settings import Reranker, RerankerSettings
from spacy_el.sap.config import TrainConfig
from spacy_el.sap.train import ENCODER, train_encoder

RERANKER = "reranker"
STATS_FILE = "rerank.json"
#: Weights of `cosine + weight × score` tried on dev (0: the bi-encoder's own order).
WEIGHT_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


@dataclass
class Mention:
    """A mention to rerank: its marked context, the gold field, the bi-encoder's candidates."""

    context: str
    gold: list[str]
    candidates: list[Candidate]


@dataclass
class RerankResult:
    reranker_dir: Path
    n_train_groups: int
    n_train_mentions: int
    steps: int
    weight: float
    dev_bi_acc1: float | None = None
    dev_scores: list[float] = field(default_factory=list)
    #: Acc@1 of the train mentions' candidate lists as the reranker saw them: near 100 when their
    #: encoder was trained on them (little to learn), the served encoder's dev Acc@1 when cross-fitted
    train_bi_acc1: float | None = None


#: corpus, its linking queries → the text each is searched by (`spacy_el.linker.link.query_texts`
#: resolves defined abbreviations; the default is each query's own text).
QueryTexts = Callable[[PubTatorCorpus, list], list[str]]


def corpus_mentions(corpus: PubTatorCorpus, encoder: Encoder, index: ConceptIndex, *, k: int,
                    window: int, query_texts: QueryTexts | None = None, batch_size: int = 256) -> list[Mention]:
    """Every linking query of a corpus (SapBERT protocol) with its context and top-k candidates,
    each searched by the text `query_texts` gives (its own by default)."""
    queries = linking_queries(corpus)
    texts = query_texts(corpus, queries) if query_texts is not None else [q.text for q in queries]
    unique = list(dict.fromkeys(texts))
    found = dict(zip(unique, index.search(encoder.embed(unique, batch_size=batch_size), k=k))) if unique else {}
    doc_text = {d.pmid: d.text for d in corpus.docs}
    return [Mention(mention_in_context(doc_text[q.pmid], q.start, q.end, query=t, window=window), list(q.gold),
                    found[t]) for q, t in zip(queries, texts)]


def train_groups(mentions: Sequence[Mention], index: ConceptIndex, names: dict[str, list[str]],
                 max_names: int, size: int | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """(context, candidate texts with the gold first) per train mention whose gold is one KB
    concept; the others are the mention's wrong top-k candidates (the first `size - 1` of them
    with `size`: a listwise reranker's lists are one model input each, so their length is bounded)."""
    owners = id_owners(index.table.ids)
    groups = []
    for m in mentions:
        concepts = list(dict.fromkeys(owners[i] for i in m.gold if i in owners))
        if len(concepts) != 1:
            continue
        gold = concepts[0]
        hit = next((c for c in m.candidates if c.concept_id == gold), None)
        gold_names = names.get(gold, [])
        if hit is None and not gold_names:
            continue
        gold_text = candidate_text(hit.name if hit else gold_names[0], gold_names, max_names)
        wrong = [candidate_text(c.name, names.get(c.concept_id, ()), max_names)
                 for c in m.candidates if not ids_match(c.concept_id, gold)]
        if size is not None:
            wrong = wrong[:size - 1]
        if wrong:
            groups.append((m.context, (gold_text, *wrong)))
    return groups


class Example(NamedTuple):
    """One training group as a step sees it: the candidates in this epoch's order, where the gold
    is among them, and the teacher's scores in the same order (None without a teacher)."""

    context: str
    candidates: tuple[str, ...]
    gold: int
    teacher: tuple[float, ...] | None = None


def shuffled(group: tuple[str, tuple[str, ...]], rng: random.Random,
             teacher: Sequence[float] | None = None) -> Example:
    """The group's candidates (gold first) in a random order: a listwise reranker must not learn
    that the gold comes first. The teacher's scores are moved with their candidates."""
    context, cands = group
    order = list(range(len(cands)))
    rng.shuffle(order)
    return Example(context, tuple(cands[i] for i in order), order.index(0),
                   None if teacher is None else tuple(float(teacher[i]) for i in order))


@dataclass
class GroupLoss:
    """Softmax cross-entropy of the gold candidate within each group; with teacher scores,
    `(1 - soft_weight) · cross-entropy + soft_weight · KL(teacher ‖ student)` over the group's
    softmax (Hinton et al.'s distillation, listwise as in RocketQAv2)."""

    soft_weight: float = 0.0

    def __call__(self, reranker: CrossEncoderReranker, batch: Sequence[Example], model=None):
        import torch
        from torch.nn.functional import cross_entropy, kl_div, log_softmax

        logits = reranker.group_logits([e.context for e in batch], [e.candidates for e in batch], model=model)
        losses = []
        for group, example in zip(logits, batch):
            loss = cross_entropy(group[None], torch.tensor([example.gold]))
            if example.teacher is not None and self.soft_weight:
                target = log_softmax(torch.tensor(example.teacher, dtype=group.dtype), dim=0)
                soft = kl_div(log_softmax(group, dim=0), target, reduction="sum", log_target=True)
                loss = (1 - self.soft_weight) * loss + self.soft_weight * soft
            losses.append(loss)
        return torch.stack(losses).mean()


def tune_weight(mentions: Sequence[Mention], reranked: Sequence[Sequence[Candidate]],
                grid: Sequence[float] = WEIGHT_GRID, bonus: Mapping[str, float] | None = None
                ) -> tuple[float, float, dict[float, float]]:
    """(best weight, its Acc@1, Acc@1 per weight) of `cosine + weight × rerank_score` on dev, plus
    the index's prior `bonus` per concept as the linker adds it (`rerank`); ties go to the smaller
    weight (0 first, the bi-encoder's order)."""
    gold = [m.gold for m in mentions]
    bonus = bonus or {}
    per: dict[float, float] = {}
    for w in grid:
        ranked = [[c.concept_id for c in sorted(cands, key=lambda c: -(c.score + bonus.get(c.concept_id, 0.0)
                                                                         + w * (c.rerank_score or 0.0)))]
                  for cands in reranked]
        per[w] = accuracy_at_k(ranked, gold, ks=(1,))["acc@1"]
    best = max(per, key=lambda w: (per[w], -w))
    return best, per[best], per


def train_reranker(train: Sequence[str | Path], kb_index: ConceptIndex, encoder: Encoder, output_dir: str | Path,
                   *, dev: Sequence[str | Path] = (), types: Sequence[str] | None = None,
                   base: str | Path | None = None, layers: int | None = 2,
                   settings: RerankerSettings = RerankerSettings(), config: TrainConfig = RERANK_CONFIG,
                   batch_size: int = 16, max_train: int | None = None, max_dev: int | None = None,
                   query_texts: QueryTexts | None = None, resume: bool = False, num_threads: int | None = None,
                   teacher: Reranker | None = None, soft_weight: float = 0.5,
                   train_linkers: Sequence[tuple[Encoder, ConceptIndex]] | None = None,
                   show_progress: bool = True) -> RerankResult:
    """Train a reranker for the linker whose `encoder` + `kb_index` give the candidates (see the
    module docstring); the result is `OUTPUT_DIR/reranker` (checkpoints in `OUTPUT_DIR/checkpoint`,
    counts and dev scores in `OUTPUT_DIR/rerank.json`). `max_train`/`max_dev`: a seeded sample of
    that many train groups / dev mentions (CPU budgets). `batch_size`: mentions per step.
    `query_texts`: the text each mention is searched by (e.g. the long form of an abbreviation),
    as the linker will search it. `teacher`: a reranker to distil (see the module docstring),
    its soft targets weighted by `soft_weight` in [0, 1]. `train_linkers`: the (encoder, index)
    giving each train file its candidates, one per file (default: `encoder` + `kb_index` for all):
    for a fine-tuned encoder, cross-fitted ones that were not trained on that file (`spacy-el
    split-folds`), whose candidate lists hold the confusions the served encoder makes on new text;
    its own lists for its own train mentions are too easy to learn from. Dev candidates always
    come from `encoder` + `kb_index`, the linker being served."""
    from spacy_el.models import minilm_dir

    if not train:
        raise InputError("give at least one annotated train corpus (PubTator) to train the reranker on")
    if not 0.0 <= soft_weight <= 1.0:
        raise InputError(f"soft_weight={soft_weight}: use a weight in [0, 1] for the teacher's soft targets")
    output_dir = Path(output_dir)
    k = settings.top_k
    names = dict(concept_names(kb_index.table))
    if train_linkers is None:
        train_linkers = [(encoder, kb_index)] * len(train)
    if len(train_linkers) != len(train):
        raise InputError(f"{len(train_linkers)} fold linkers (--fold-encoder/--fold-index) for {len(train)} train "
                         "files: give one encoder and one index per train file, in the same order, or none")
    mentions: list[Mention] = []
    for path, (file_encoder, file_index) in zip(train, train_linkers):
        mentions += corpus_mentions(read_pubtator(path, types), file_encoder, file_index, k=k,
                                    window=settings.window, query_texts=query_texts)
    groups = train_groups(mentions, kb_index, names, settings.max_names, k if settings.listwise else None)
    if not groups:
        raise InputError(f"{', '.join(map(str, train))}: no train mention has a gold concept in the index with wrong "
                         "candidates to learn from; check --types and that corpus and KB use the same ids")
    train_acc = accuracy_at_k([[c.concept_id for c in m.candidates] for m in mentions], [m.gold for m in mentions],
                              ks=(1,))["acc@1"]
    rng = random.Random(config.seed)
    if max_train is not None and len(groups) > max_train:
        groups = rng.sample(groups, max_train)
    dev_mentions: list[Mention] = []
    for path in dev:
        dev_mentions += corpus_mentions(read_pubtator(path, types), encoder, kb_index, k=k, window=settings.window,
                                        query_texts=query_texts)
    if max_dev is not None and len(dev_mentions) > max_dev:
        dev_mentions = random.Random(config.seed + 1).sample(dev_mentions, max_dev)

    soft = dict(zip(groups, teacher.score_groups([c for c, _ in groups], [g for _, g in groups]))) if teacher else {}

    reranker = CrossEncoderReranker.from_base(base or minilm_dir(), layers=layers, settings=settings,
                                              seed=config.seed, num_threads=num_threads)
    bi_acc = None
    evaluate = None
    if dev_mentions:
        bonus = kb_index.concept_bonus()  # the order the linker will give: with the index's prior, if any
        bi_acc = tune_weight(dev_mentions, [m.candidates for m in dev_mentions], (0.0,), bonus)[1]

        def evaluate(model: CrossEncoderReranker) -> float:
            reranked = rerank(model, [m.context for m in dev_mentions], [m.candidates for m in dev_mentions], names,
                              top_k=k, weight=0.0)
            weight, acc, _ = tune_weight(dev_mentions, reranked, bonus=bonus)
            spread = max((max(c.rerank_score for c in cands[:k]) - min(c.rerank_score for c in cands[:k])
                          for cands in reranked if len(cands) > 1), default=None)
            model.settings = dataclasses.replace(model.settings, weight=weight, score_spread=spread)
            return acc

    def factory(epoch: int, _model) -> list:
        rng = random.Random(f"{config.seed}:{epoch}")
        order = list(groups)
        rng.shuffle(order)
        order = [shuffled(g, rng, soft.get(g)) for g in order]
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    result = train_encoder(reranker, factory, config, output_dir, resume=resume, evaluate=evaluate,
                           loss_fn=GroupLoss(soft_weight if teacher else 0.0), show_progress=show_progress)
    final = output_dir / RERANKER
    if (output_dir / ENCODER).exists():  # the loop's name for the kept model
        if final.exists():
            shutil.rmtree(final)
        os.replace(output_dir / ENCODER, final)
    weight = CrossEncoderReranker.load(final).settings.weight
    out = RerankResult(final, len(groups), len(mentions), result.steps, weight, bi_acc, result.scores, train_acc)
    with atomic_write(output_dir / STATS_FILE) as f:
        json.dump({"train": [str(p) for p in train], "dev": [str(p) for p in dev], "n_train_mentions": len(mentions),
                   "n_train_groups": len(groups), "train_acc@1_of_candidates": train_acc,
                   "n_dev_mentions": len(dev_mentions), "steps": result.steps,
                   "weight": weight, "dev_acc@1_bi_encoder": bi_acc, "dev_acc@1_per_epoch": result.scores,
                   "settings": dataclasses.asdict(reranker.settings),
                   "train_config": dataclasses.asdict(config) | {"batch_size": batch_size, "max_train": max_train},
                   "teacher": None if teacher is None else {"settings": dataclasses.asdict(teacher.settings),
                                                            "soft_weight": soft_weight}},
                  f, indent=2)
    return out
