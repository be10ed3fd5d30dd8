"""`sap_linker`: links every entity to KB concepts by embedding its text with a SapEncoder and
searching a ConceptIndex. It runs after any NER (`bilstm_ner`, spaCy's `ner`, an `entity_ruler`).

Per entity it sets
- `ent.kb_id_` (through `token.ent_kb_id`): the best concept, or `nil_id` when its cosine is
  below `threshold` (or the entity's label is not in `labels`, which leaves it untouched);
- `ent._.kb_candidates`: `[Candidate(concept_id, score, name, source), …]`, best first, up to
  `top_k` (a `Candidate` is a named tuple; `source` is "kb" or the corpus file an alias came from).

`name_lookup` (on by default): a mention whose text is a KB name (up to case and spacing for an
uncased encoder) takes that name's vector from the index instead of running the encoder. It is
the vector the encoder gives that text, so links do not change; it needs an index that stores
vectors uncompressed (`Flat`, `HNSW…`) and is skipped for others.

Nothing is loaded when the component is created, because `spacy.load` of a packaged pipeline
calls the factory with the config's paths, which need not exist on the target machine, and then
`from_disk`. The encoder and index come, whichever happens first, from `from_disk` (the
pipeline's own `encoder/` and `index/`), from `initialize(...)` (paths, or a KB file to build the
index from), or from the config paths on first use.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import ensure_path, minibatch, registry
from spacy.util import from_disk as util_from_disk
from spacy.util import to_disk as util_to_disk
from spacy.vocab import Vocab

from spacy_el.io import InputError

if not Span.has_extension("kb_candidates"):
    Span.set_extension("kb_candidates", default=None)

NIL = "NIL"


@Language.factory(
    "sap_linker",
    assigns=["token.ent_kb_id"],
    default_config={
        "encoder": None,
        "index": None,
        "top_k": 5,
        "threshold": 0.0,
        "nil_id": NIL,
        "labels": [],
        "batch_size": 256,
        "cache_size": 50_000,
        "resolve_abbreviations": False,
        "name_lookup": True,
        "scorer": {"@scorers": "spacy_el.linker_scorer.v1"},
    },
    default_score_weights={"nel_micro_f": 1.0, "nel_micro_p": None, "nel_micro_r": None},
)
def make_sap_linker(
    nlp: Language,
    name: str,
    encoder: Optional[str],
    index: Optional[str],
    top_k: int,
    threshold: float,
    nil_id: str,
    labels: List[str],
    batch_size: int,
    cache_size: int,
    resolve_abbreviations: bool,
    name_lookup: bool,
    scorer: Optional[Callable],
) -> "SapEntityLinker":
    """Create the linker (loads nothing yet: see the module docstring)."""
    return SapEntityLinker(nlp.vocab, name, encoder=encoder, index=index, top_k=top_k, threshold=threshold,
                           nil_id=nil_id, labels=labels, batch_size=batch_size, cache_size=cache_size,
                           resolve_abbreviations=resolve_abbreviations, name_lookup=name_lookup, scorer=scorer)


def score_linker(examples: Iterable[Example], *, nil_id: str = NIL, **kwargs: Any) -> Dict[str, Any]:
    """spaCy's entity-level link scores (`nel_micro_p/r/f`, per type) with our NIL id."""
    return Scorer.score_links(examples, negative_labels=[nil_id])


def _exact_key(text: str) -> str:
    return text


def _uncased_key(text: str) -> str:
    return " ".join(text.lower().split())


@registry.scorers("spacy_el.linker_scorer.v1")
def make_linker_scorer() -> Callable:
    return score_linker


class SapEntityLinker(Pipe):
    """Links `doc.ents` to concepts (see the module docstring); not trainable here: the encoder
    is trained by `spacy-el pretrain` / `finetune` and the index built by `build-index`."""

    def __init__(self, vocab: Vocab, name: str = "sap_linker", *, encoder: Optional[str] = None,
                 index: Optional[str] = None, top_k: int = 5, threshold: float = 0.0, nil_id: str = NIL,
                 labels: Sequence[str] = (), batch_size: int = 256, cache_size: int = 50_000,
                 resolve_abbreviations: bool = False, name_lookup: bool = True,
                 scorer: Optional[Callable] = score_linker) -> None:
        if top_k < 1:
            raise InputError(f"[components.{name}] top_k={top_k}: use an integer >= 1")
        if batch_size < 1:
            raise InputError(f"[components.{name}] batch_size={batch_size}: use an integer >= 1")
        self.vocab = vocab
        self.name = name
        self.cfg: Dict[str, Any] = {
            "encoder": str(encoder) if encoder else None, "index": str(index) if index else None,
            "top_k": top_k, "threshold": threshold, "nil_id": nil_id, "labels": list(labels),
            "batch_size": batch_size, "cache_size": cache_size, "resolve_abbreviations": resolve_abbreviations,
            "name_lookup": name_lookup,
        }
        self.scorer = scorer
        self._encoder = None
        self._index = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        #: Search results of the texts in `_cache`, valid while `_found_state` holds.
        self._found: Dict[str, list] = {}
        self._found_state: Optional[tuple] = None
        self._lookup_key: Optional[Callable[[str], str]] = None

    # ------------------------------------------------------------------ the two parts
    @property
    def encoder(self):
        """The encoder (SapEncoder, or OnnxEncoder for an `export-onnx` directory), loaded from the
        config path on first use if nothing set it."""
        if self._encoder is None:
            if not self.cfg["encoder"]:
                raise InputError(
                    f"{self.name} has no encoder: set `encoder` in [components.{self.name}] or "
                    f"[initialize.components.{self.name}], or load a saved pipeline that contains one")
            from spacy_el.sap.encoder import load_encoder

            self._encoder = load_encoder(self.cfg["encoder"])
        return self._encoder

    @property
    def index(self):
        """The ConceptIndex, loaded from the config path on first use (checked against the encoder)."""
        if self._index is None:
            if not self.cfg["index"]:
                raise InputError(
                    f"{self.name} has no concept index: set `index` in [components.{self.name}], give "
                    f"`index` or `kb` in [initialize.components.{self.name}], or load a saved pipeline")
            from spacy_el.kb.index import ConceptIndex

            self._index = ConceptIndex.load(self.cfg["index"], self.encoder)
        return self._index

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, encoder: Any = None, index: Any = None,
                   kb: Optional[str] = None, kb_format: str = "auto", index_type: str = "Flat",
                   add_mentions: Optional[List[str]] = None, mention_types: Optional[List[str]] = None,
                   prior_from: Optional[List[str]] = None, prior_weight: Optional[float] = None,
                   use_gpu: str = "auto") -> None:
        """Set the encoder (path, hub name or SapEncoder) and the index: load one (path or
        ConceptIndex), or build one from `kb` (+ `add_mentions`: annotated PubTator files whose
        train mentions become aliases; `prior_from`: files whose gold-concept counts become the
        index's corpus prior). Falls back to the config's paths."""
        from spacy_el.kb.index import ConceptIndex, corpus_prior, mention_alias_table
        from spacy_el.sap.encoder import load_encoder

        if encoder is not None:
            self._encoder = encoder if hasattr(encoder, "embed") else load_encoder(encoder)
            self.cfg["encoder"] = None if hasattr(encoder, "embed") else str(encoder)
        enc = self.encoder
        if kb is not None:
            from spacy_el.kb.readers import read_kb

            self._index = ConceptIndex.build(read_kb(kb, kb_format), enc, index_type,
                                             extra=mention_alias_table(add_mentions or (), mention_types),
                                             use_gpu=use_gpu)
        else:
            if index is not None:
                self._index = index if isinstance(index, ConceptIndex) else ConceptIndex.load(index, enc, use_gpu=use_gpu)
                self.cfg["index"] = None if isinstance(index, ConceptIndex) else str(index)
            self.index.check_encoder(enc)
            if add_mentions:
                self.index.add_aliases(mention_alias_table(add_mentions, mention_types), enc)
        if prior_from:
            self.index.set_prior(corpus_prior(prior_from, mention_types), prior_from, prior_weight)
        elif prior_weight is not None:
            self.index.set_prior_weight(prior_weight)
        self.clear_cache()
        self._lookup_key = None

    # ------------------------------------------------------------------ linking
    def __call__(self, doc: Doc) -> Doc:
        self._link([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Link a batch of docs at once: each distinct mention text is embedded once."""
        for docs in minibatch(stream, size=batch_size):
            self._link(docs)
            yield from docs

    def _link(self, docs: Sequence[Doc]) -> None:
        labels = set(self.cfg["labels"])
        ents = [ent for doc in docs for ent in doc.ents if not labels or ent.label_ in labels]
        if not ents:
            return
        texts = [self._query_text(ent) for ent in ents]
        candidates = self._candidates(list(dict.fromkeys(texts)))
        nil, threshold = self.cfg["nil_id"], self.cfg["threshold"]
        for ent, text in zip(ents, texts):
            cands = candidates[text]
            kb_id = cands[0].concept_id if cands and cands[0].score >= threshold else nil
            for token in ent:
                token.ent_kb_id_ = kb_id
            ent._.kb_candidates = cands  # keyed by the span's offsets, so doc.ents sees it

    def _query_text(self, ent: Span) -> str:
        """The entity's text, or the long form of an abbreviation defined in the doc."""
        if self.cfg["resolve_abbreviations"] and Span.has_extension("long_form"):
            long_form = ent._.long_form
            if long_form is not None:
                return getattr(long_form, "text", str(long_form))
        return ent.text

    def clear_cache(self) -> None:
        """Forget cached mention vectors and search results (a new encoder or index does this)."""
        self._cache.clear()
        self._found.clear()

    def _candidates(self, texts: List[str]) -> Dict[str, list]:
        """Top-k candidates per distinct text. A text still in the mention cache reuses its last
        search result while the index, its prior and `top_k` are unchanged (mentions repeat
        across documents, and on a fast encoder the search is most of the cost)."""
        vectors = self._vectors(texts)
        index, k = self.index, self.cfg["top_k"]
        state = (id(index), len(index), id(index.prior), index.prior_weight, k)
        if state != self._found_state:
            self._found.clear()
            self._found_state = state
        todo = [i for i, text in enumerate(texts) if text not in self._found]
        found = dict(zip((texts[i] for i in todo), index.search(vectors[todo], k=k))) if todo else {}
        out = {text: found[text] if text in found else self._found[text] for text in texts}
        self._found.update((text, cands) for text, cands in found.items() if text in self._cache)
        return out

    def _vectors(self, texts: List[str]) -> np.ndarray:
        """Mention vectors through an LRU cache (mentions repeat across documents); texts not
        cached come from the KB's stored vectors when they are KB names (`name_lookup`), the
        rest from the encoder."""
        missing = [t for t in texts if t not in self._cache]
        fresh = self._name_vectors(missing) if missing and self.cfg["name_lookup"] else {}
        rest = [t for t in missing if t not in fresh]
        if rest:
            fresh.update(zip(rest, self.encoder.embed(rest, batch_size=self.cfg["batch_size"])))
        vectors = np.stack([fresh[t] if t in fresh else self._cache[t] for t in texts])
        for text in texts:
            if text in fresh:
                self._cache[text] = fresh[text]
            else:
                self._cache.move_to_end(text)
        while len(self._cache) > max(self.cfg["cache_size"], 0):
            self._found.pop(self._cache.popitem(last=False)[0], None)
        return vectors

    def _name_vectors(self, texts: List[str]) -> Dict[str, np.ndarray]:
        """A mention that is a KB name (up to case and spacing when the encoder is uncased) gets
        the name's stored vector: what the encoder would compute for it, without running it. Only
        indexes that keep vectors uncompressed (Flat, HNSW) can give them."""
        if self._lookup_key is None:
            self._lookup_key = _uncased_key if getattr(self.encoder, "uncased", False) else _exact_key
        index = self.index
        rows = index.name_rows(self._lookup_key)
        hits = {t: rows[k] for t in texts if (k := self._lookup_key(t)) in rows}
        stored = index.stored_vectors(list(hits.values())) if hits else None
        return dict(zip(hits, stored)) if stored is not None else {}

    # ------------------------------------------------------------------ disk
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """`encoder/` (an HF directory, or an ONNX export) and `index/` (FAISS + table + meta): the pipeline
        then carries everything it needs and loads without the original paths."""
        util_to_disk(ensure_path(path), {"encoder": lambda p: self.encoder.save(p),
                                         "index": lambda p: self.index.save(p)}, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "SapEntityLinker":
        from spacy_el.kb.index import ConceptIndex
        from spacy_el.sap.encoder import load_encoder

        path = ensure_path(path)

        def read_encoder(p: Path) -> None:
            self._encoder = load_encoder(p)

        def load_index(p: Path) -> None:
            self._index = ConceptIndex.load(p, self.encoder)

        util_from_disk(path, {"encoder": read_encoder, "index": load_index}, exclude)
        self.clear_cache()
        self._lookup_key = None
        return self
