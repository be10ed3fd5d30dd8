"""The linker's mention search: top-k concepts for mention texts through one encoder and one
ConceptIndex, with the caches that make a corpus cheap to link.

Mentions repeat, within a document and across a corpus, so the work is done per *distinct
encoder input*, not per entity:
- texts that the encoder cannot tell apart share one vector and one search: for an uncased
  encoder "Breast cancer", "breast cancer" and "breast  cancer" are one input (`normalize_name`:
  the tokenizer lowercases and splits on whitespace); for a cased one every text is its own;
- a bounded LRU cache keeps the vectors of recent inputs, and their search results while the
  index, its prior and `k` are unchanged (on a fast encoder the search is most of the cost);
- `name_lookup`: an input that is a KB name takes the name's stored vector from the index (what
  the encoder computes for it) instead of running the encoder; only indexes that keep vectors
  uncompressed (`Flat`, `HNSW…`) can give them;
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np

from spacy_el.ids import normalize_name
from spacy_el.kb.ranking import Candidate
from spacy_el.models import Encoder

if TYPE_CHECKING:
    from spacy_el.kb.index import ConceptIndex


def _exact(text: str) -> str:
    return text


class MentionSearch:
    """Top-k candidates per mention text, through the caches described in the module docstring."""

    def __init__(self, encoder: Encoder, index: ConceptIndex) -> None:
        index.check_encoder(encoder)
        self.encoder, self.index = encoder, index
        #: The encoder's input for a text: texts with one key get one vector.
        self.key: Callable[[str], str] = normalize_name if getattr(encoder, "uncased", False) else _exact
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # key → vector, LRU order
        self._found: Dict[str, Dict[Optional[tuple], List[Candidate]]] = {}  # key → type filter → candidates
        self._found_state: Optional[tuple] = None

    def clear(self) -> None:
        """Forget cached vectors and search results."""
        self._vectors.clear()
        self._found.clear()

    def __len__(self) -> int:
        """How many inputs the cache holds."""
        return len(self._vectors)

    def cached(self) -> List[str]:
        """The cached inputs, least recently used first."""
        return list(self._vectors)

    def candidates(self, texts: Sequence[str], k: int, *, types: Optional[tuple] = None,
                   allowed: Optional[np.ndarray] = None, batch_size: int = 256, cache_size: int = 50_000,
                   name_lookup: bool = True) -> Dict[str, List[Candidate]]:
        """Top-k candidates of each text (among the rows `allowed`, the filter named `types`).
        An input still in the cache reuses its last search while the index, its prior and `k`
        are unchanged."""
        keys = {text: self.key(text) for text in texts}
        distinct = list(dict.fromkeys(keys.values()))
        index = self.index
        state = (id(index), len(index), id(index.prior), index.prior_weight, k, id(index.types))
        if state != self._found_state:
            self._found.clear()
            self._found_state = state
        vectors = self._embed(distinct, batch_size, cache_size, name_lookup)
        todo = [i for i, key in enumerate(distinct) if types not in self._found.get(key, {})]
        found: Dict[str, List[Candidate]] = {}
        if todo:
            restrict = {} if allowed is None else {"allowed": allowed}
            found = dict(zip((distinct[i] for i in todo), index.search(vectors[todo], k=k, **restrict)))
        for key, cands in found.items():
            if key in self._vectors:
                self._found.setdefault(key, {})[types] = cands
        return {text: found[key] if key in found else self._found[key][types] for text, key in keys.items()}

    def _embed(self, keys: List[str], batch_size: int, cache_size: int, name_lookup: bool) -> np.ndarray:
        """Vectors of distinct inputs: cached, stored in the index (KB names), or encoded."""
        missing = [key for key in keys if key not in self._vectors]
        fresh = self.name_vectors(missing) if missing and name_lookup else {}
        rest = [key for key in missing if key not in fresh]
        if rest:
            fresh.update(zip(rest, self.encoder.embed(rest, batch_size=batch_size)))
        vectors = np.stack([fresh[key] if key in fresh else self._vectors[key] for key in keys])
        for key in keys:
            if key in fresh:
                self._vectors[key] = fresh[key]
            else:
                self._vectors.move_to_end(key)
        while len(self._vectors) > max(cache_size, 0):
            self._found.pop(self._vectors.popitem(last=False)[0], None)
        return vectors

    def name_vectors(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """The stored vectors of the texts that are KB names (up to `key`), or {} when the
        index keeps no exact vectors."""
        if not self.index.stores_vectors:  # a compressed index: no exact vectors to take
            return {}
        rows = self.index.name_rows(self.key)
        hits = {t: rows[k] for t in texts if (k := self.key(t)) in rows}
        stored = self.index.stored_vectors(list(hits.values())) if hits else None
        return dict(zip(hits, stored)) if stored is not None else {}
