"""Candidates for spaCy's own `entity_linker` from the FAISS concept index, and the spaCy
`KnowledgeBase` that goes with them.

spaCy's `EntityLinker` ranks a mention's candidates by their entity vectors against a learned
encoding of the sentence around it, and gets the candidates from `get_candidates(kb, span)` /
`get_candidates_batch(kb, spans)` (alias tables by default: only exact alias strings). These
registered generators embed the mention with our encoder and take the index's top-k concepts
instead, so misspellings, word-order variants and unseen synonyms get candidates too:

```ini
[components.entity_linker]
factory = "entity_linker"
entity_vector_length = 384             # the KB's vector length (kb_from_index: the encoder's dim)
candidates_batch_size = 64

[components.entity_linker.get_candidates]
@misc = "spacy_el.FaissCandidates.v1"
index = "index/"
encoder = "encoder/"
top_k = 10

[components.entity_linker.get_candidates_batch]
@misc = "spacy_el.FaissCandidatesBatch.v1"
index = "index/"
encoder = "encoder/"
top_k = 10

[initialize.components.entity_linker.kb_loader]
@misc = "spacy_el.KBFromIndex.v1"
index = "index/"
encoder = "encoder/"
```

`kb_from_index` builds an `InMemoryLookupKB` from the index's concept table: one entity per
concept (its vector: the mean of its names' stored vectors for indexes that keep them, `Flat` and
`HNSW…`, else the encoder's vector of its first name; its frequency: the corpus prior's count),
one alias per name. A candidate's `prior_prob` is its cosine (clipped to [0, 1]), which spaCy
combines with the context similarity (`incl_prior`). Every candidate must be an entity of the KB
the linker holds: a KB built from another index is refused with the fix.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Callable, Iterable, List, Optional

import numpy as np
from spacy.kb import Candidate as SpacyCandidate
from spacy.kb import InMemoryLookupKB, KnowledgeBase
from spacy.tokens import Span
from spacy.util import registry
from spacy.vocab import Vocab

from spacy_el.io import InputError
from spacy_el.kb.index import ConceptIndex
from spacy_el.models import Encoder

GetCandidates = Callable[[KnowledgeBase, Span], Iterable[SpacyCandidate]]
GetCandidatesBatch = Callable[[KnowledgeBase, Iterable[Span]], Iterable[Iterable[SpacyCandidate]]]


class FaissCandidateGenerator:
    """`get_candidates` and `get_candidates_batch` of spaCy's `entity_linker` over a ConceptIndex."""

    def __init__(self, encoder: Encoder, index: ConceptIndex, top_k: int = 10, batch_size: int = 256) -> None:
        if top_k < 1:
            raise InputError(f"top_k={top_k}: use an integer >= 1")
        index.check_encoder(encoder)
        self.encoder, self.index, self.top_k, self.batch_size = encoder, index, top_k, batch_size

    def __call__(self, kb: KnowledgeBase, span: Span) -> List[SpacyCandidate]:
        return self.batch(kb, [span])[0]

    def batch(self, kb: KnowledgeBase, spans: Iterable[Span]) -> List[List[SpacyCandidate]]:
        """Each span's top-k concepts as spaCy candidates (each distinct text embedded once)."""
        spans = list(spans)
        texts = list(dict.fromkeys(s.text for s in spans if s.text.strip()))
        if not texts:
            return [[] for _ in spans]
        vectors = np.asarray(self.encoder.embed(texts, batch_size=self.batch_size), dtype="float32")
        found = dict(zip(texts, self.index.search(vectors, k=self.top_k)))
        return [self._spacy_candidates(kb, s.text, found.get(s.text, [])) for s in spans]

    def _spacy_candidates(self, kb: KnowledgeBase, text: str, cands: list) -> List[SpacyCandidate]:
        out = []
        alias = kb.vocab.strings.add(text)
        for c in cands:
            if not kb.contains_entity(c.concept_id):
                raise InputError(
                    f"the entity_linker's KB has no entity {c.concept_id!r}, a concept of the index "
                    f"{self.index.meta.get('path', '')!r} its candidates come from: the KB was not built from this "
                    "index. Build it with [initialize.components.entity_linker.kb_loader] @misc = "
                    "\"spacy_el.KBFromIndex.v1\" and the same index path, or point the candidate generator at "
                    "the index the KB was built from")
            out.append(SpacyCandidate(kb, kb.vocab.strings[c.concept_id], 1, kb.get_vector(c.concept_id),
                                      alias, float(min(max(c.score, 0.0), 1.0))))
        return out


def kb_from_index(vocab: Vocab, index: ConceptIndex, encoder: Optional[Encoder] = None,
                  batch_size: int = 256) -> InMemoryLookupKB:
    """An `InMemoryLookupKB` with one entity per concept of `index` and one alias per name (see
    the module docstring); `encoder` is needed only for indexes that do not store vectors."""
    table = index.table
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row, cid in enumerate(table.ids):
        rows_of[cid].append(row)
    concepts = list(rows_of)
    stored = index.stored_vectors(list(range(len(table))))
    if stored is not None:
        vectors = np.stack([stored[rows].mean(axis=0) for rows in rows_of.values()])
    elif encoder is not None:
        index.check_encoder(encoder)
        vectors = np.asarray(encoder.embed([table.names[rows[0]] for rows in rows_of.values()],
                                           batch_size=batch_size), dtype="float32")
    else:
        raise InputError(f"index type {index.meta.get('index_type')!r} does not store its vectors: give the encoder "
                         "the index was built with (KBFromIndex.v1 `encoder = \"encoder/\"`) to embed the concepts")
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kb = InMemoryLookupKB(vocab, entity_vector_length=vectors.shape[1])
    kb.set_entities(concepts, [float(index.prior.get(c, 1)) for c in concepts], vectors.tolist())
    by_name: dict[str, list[str]] = defaultdict(list)
    for cid, name in zip(table.ids, table.names):
        if cid not in by_name[name]:
            by_name[name].append(cid)
    for name, cids in by_name.items():
        kb.add_alias(alias=name, entities=cids, probabilities=[1.0 / len(cids)] * len(cids))
    return kb


@lru_cache(maxsize=4)
def _load(index: str, encoder: str) -> tuple[ConceptIndex, Encoder]:
    """One encoder and index per (paths) in a process: the single and batch generators share them."""
    from spacy_el.sap.encoders import load_encoder

    enc = load_encoder(encoder)
    return ConceptIndex.load(index, enc, use_gpu="auto"), enc


@registry.misc("spacy_el.FaissCandidates.v1")
def faiss_candidates(index: str, encoder: str, top_k: int = 10) -> GetCandidates:
    """`get_candidates` of spaCy's `entity_linker`: the top-k concepts of the index at `index`
    for the mention embedded by the encoder at `encoder` (the one the index was built with)."""
    idx, enc = _load(index, encoder)
    return FaissCandidateGenerator(enc, idx, top_k)


@registry.misc("spacy_el.FaissCandidatesBatch.v1")
def faiss_candidates_batch(index: str, encoder: str, top_k: int = 10) -> GetCandidatesBatch:
    """`get_candidates_batch` of spaCy's `entity_linker` (see `faiss_candidates`)."""
    idx, enc = _load(index, encoder)
    return FaissCandidateGenerator(enc, idx, top_k).batch


@registry.misc("spacy_el.KBFromIndex.v1")
def kb_from_index_loader(index: str, encoder: Optional[str] = None) -> Callable[[Vocab], KnowledgeBase]:
    """`kb_loader` of `entity_linker.initialize`: `kb_from_index` over the index at `index`."""

    def load(vocab: Vocab) -> KnowledgeBase:
        if encoder is None:
            return kb_from_index(vocab, ConceptIndex.load(index))
        idx, enc = _load(index, encoder)
        return kb_from_index(vocab, idx, enc)

    return load
