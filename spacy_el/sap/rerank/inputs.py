"""How a reranker's inputs are laid out and batched, whatever the runtime: one (context, candidate)
pair per input, scored by the model's sequence head; or, listwise (`RerankerSettings.listwise`), a
mention's candidates read together, `[CLS] context [SEP] c1 [SEP] c2 … [SEP]`, each scored by the
mean of a token head over its own tokens. The second reads the context once for all k candidates
(about k× fewer tokens on CPU) and lets candidates be compared."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from spacy_el.io import InputError
from spacy_el.sap.rerank.settings import Reranker, RerankerSettings

class ListwiseInputs:
    """`[CLS] context [SEP] c1 [SEP] … ck [SEP]` for each mention (token types 0 for the context, 1 for
    the candidates) and where each candidate's tokens lie. Each candidate keeps its first
    `candidate_tokens` tokens; the context is cut evenly at both ends (the mention sits in the middle
    of its window) to fit `max_length`, keeping at least `MIN_CONTEXT` tokens."""

    MIN_CONTEXT = 8

    def __init__(self, tokenizer, settings: RerankerSettings, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        probe = self.tokenizer.encode("a", "b").ids  # the model's own pair template: [CLS] a [SEP] b [SEP]
        self.cls_id, self.sep_id, self.pad_id = probe[0], probe[-1], pad_id
        self.max_length, self.candidate_tokens = settings.max_length, settings.candidate_tokens

    def encode(self, contexts: Sequence[str], groups: Sequence[Sequence[str]]
               ) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
        """(token ids, token types, candidate spans) per context."""
        ctx_ids = [e.ids for e in self.tokenizer.encode_batch(list(contexts), add_special_tokens=False)]
        flat = [c for group in groups for c in group]
        cand_ids = [e.ids[:self.candidate_tokens] for e in self.tokenizer.encode_batch(flat, add_special_tokens=False)]
        out, at = [], 0
        for ctx, group in zip(ctx_ids, groups):
            cands, at = cand_ids[at:at + len(group)], at + len(group)
            room = max(self.max_length - 2 - sum(len(c) + 1 for c in cands), self.MIN_CONTEXT)
            if len(ctx) > room:
                cut = len(ctx) - room
                ctx = ctx[cut // 2:len(ctx) - (cut - cut // 2)]
            ids = [self.cls_id, *ctx, self.sep_id]
            spans = []
            for cand in cands:
                # an empty candidate text is read at its [SEP]
                spans.append((len(ids), len(ids) + max(len(cand), 1)))
                ids += [*cand, self.sep_id]
            out.append((ids, [0] * (len(ctx) + 2) + [1] * (len(ids) - len(ctx) - 2), spans))
        return out

    def batches(self, contexts: Sequence[str], groups: Sequence[Sequence[str]], batch_size: int
                ) -> Iterator[tuple[list[int], dict[str, np.ndarray], list[list[tuple[int, int]]]]]:
        """(indices, padded model inputs, candidate spans) in batches of similar length."""
        encoded = self.encode(contexts, groups)
        for idx in length_batches([len(e[0]) for e in encoded], batch_size):
            width = max(len(encoded[i][0]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                n = len(encoded[i][0])
                ids[row, :n], types[row, :n], mask[row, :n] = encoded[i][0], encoded[i][1], 1
            yield idx, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, [encoded[i][2] for i in idx]


def pairs(contexts: Sequence[str], groups: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """The (context, candidate) pairs of the groups, flattened in order (`_split` undoes it)."""
    return ([ctx for ctx, group in zip(contexts, groups) for _ in group],
            [c for group in groups for c in group])


def _split(flat: np.ndarray, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
    bounds = np.cumsum([len(g) for g in groups])[:-1]
    return list(np.split(flat, bounds)) if len(groups) else []


def list_scores(lists: ListwiseInputs, contexts: Sequence[str], groups: Sequence[Sequence[str]], batch_size: int,
                 token_scores: Callable[[dict[str, np.ndarray]], np.ndarray]) -> list[np.ndarray]:
    """Each group's candidate scores from listwise inputs: the mean of the model's token scores
    (`token_scores`: model inputs → a (batch, tokens) array, whatever the runtime) over each
    candidate's tokens."""
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(contexts)
    for idx, feeds, spans in lists.batches(contexts, groups, batch_size):
        tokens = token_scores(feeds)
        for row, i in enumerate(idx):
            out[i] = np.array([tokens[row, a:b].mean() for a, b in spans[row]], dtype=np.float32)
    return out


def paired_scores(contexts: Sequence[str], groups: Sequence[Sequence[str]], batch_size: int,
                   score_pairs: Callable[[list[str], list[str]], np.ndarray]) -> list[np.ndarray]:
    """Each group's candidate scores from one (context, candidate) input each, batched by length:
    `score_pairs` (contexts, candidates → one score each, whatever the runtime) runs per batch."""
    ctx, cand = pairs(contexts, groups)
    flat = np.zeros(len(ctx), dtype=np.float32)
    for idx in length_batches([len(ctx[i]) + len(cand[i]) for i in range(len(ctx))], batch_size):
        flat[idx] = score_pairs([ctx[i] for i in idx], [cand[i] for i in idx])
    return _split(flat, groups)


def length_batches(pairs_len: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (less padding)."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    order = sorted(range(len(pairs_len)), key=pairs_len.__getitem__)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]



def pair_scores(reranker: Reranker, contexts: Sequence[str], candidates: Sequence[str], batch_size: int) -> np.ndarray:
    if len(contexts) != len(candidates):
        raise InputError(f"{len(contexts)} contexts but {len(candidates)} candidates: score takes pairs")
    groups = [[c] for c in candidates]
    scores = reranker.score_groups(contexts, groups, batch_size)
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, dtype=np.float32)

