"""`sap_linker`: links every entity to KB concepts by embedding its text with an encoder
(`spacy_el.models.Encoder`) and searching a ConceptIndex. It runs after any NER (`bilstm_ner`,
spaCy's `ner`, an `entity_ruler`). One component class, because its configuration, loading,
linking and serialisation share its state; the mention search and its caches are
`spacy_el.linker.search`, coordinations `spacy_el.linker.composite`, the tagger's alternatives
`spacy_el.linker.alternatives`. docs/linker.md is the user's guide.

Per entity it sets `ent.kb_id_` (through `token.ent_kb_id`): the best concept, or `nil_id` when
its cosine is below `threshold` or the entity holds no letter or digit; entities whose label is
not in `labels` are left untouched. `ent._.kb_candidates`: `[Candidate(concept_id, score, name,
source), …]`, best first, up to `top_k`, kept in `doc.user_data` so they survive
`Doc.to_bytes`/`from_bytes` and `nlp.pipe(n_process=…)`. `composite` splits an entity that
coordinates several concepts ("breast and ovarian cancer") into parts and joins their concepts
with `|` (`ent._.kb_parts`). `type_filters` (`{label: [type, …]}`) restricts an entity of that
label to concepts of those types inside the FAISS search, so `top_k` candidates still come back.

Each distinct encoder input is embedded and searched once per batch, and recent ones are cached,
so links are those of encoding every entity, at a fraction of the cost. `performance` tunes how,
never what is linked: `cache_size` (inputs cached, 0: none), `name_lookup` (a KB name takes its
stored vector from the index instead of running the encoder) and `prefetch_index` (a saved index
is memory-mapped; loading starts reading its files into the page cache in the background, so the
first searches after a cold start do not wait on random disk reads).

The encoder and the index are heavy state, shaped as spaCy's `entity_linker` shapes its KB:
nothing is loaded when the component is created; `initialize` takes registered loaders
(`encoder_loader`, e.g. `spacy_el.EncoderFromPath.v1`; `index_loader`, e.g.
`spacy_el.IndexFromDir.v1` or `spacy_el.IndexFromKB.v1`; `reranker_loader`,
`spacy_el.RerankerFromPath.v1`), and `to_disk`/`to_bytes` carry all three, so a saved or packaged
pipeline loads without the original paths.

The reranker (optional, `spacy_el.sap.rerank`) reads each entity in a window of its doc with each
of its first `rerank_top_k` candidates and reorders them by cosine + weight × its score, for the
entities whose first candidate it could overturn (`worth_reranking`); the NIL decision still reads
the bi-encoder's best cosine.
"""
from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch, registry
from spacy.vocab import Vocab

from spacy_el.io import InputError
from spacy_el.kb.ranking import Candidate
from spacy_el.linker import alternatives, composite
from spacy_el.linker.alternatives import ALTERNATIVES_KEY
from spacy_el.linker.search import MentionSearch
from spacy_el.linker.storage import LinkerStorage
from spacy_el.models import Encoder

if TYPE_CHECKING:  # FAISS is imported when an index is loaded, not when spaCy registers the factory
    from spacy_el.kb.index import ConceptIndex

NIL = "NIL"
#: The default NIL threshold: the cosine below which the best concept is not trusted. Chosen on
#: NCBI-disease and BC5CDR-disease dev as the largest value that costs at most 0.5 Acc@1 on real
#: mentions while most non-mention spans stay unlinked (benchmarks/nil_threshold.py).
DEFAULT_THRESHOLD = 0.7
#: `performance` settings: how the linker works, never what it links (module docstring).
PERFORMANCE = {"cache_size": 50_000, "name_lookup": True, "prefetch_index": True}
#: Where `ent._.kb_candidates` keeps its value: the key spaCy gives a plain span extension.
_CANDIDATES = "kb_candidates"


def _get_candidates(span: Span) -> Optional[List[Candidate]]:
    """The span's candidates as `Candidate`s, whatever serialisation made of them (msgpack
    turns named tuples into lists)."""
    value = span.doc.user_data.get(("._.", _CANDIDATES, span.start_char, span.end_char))
    if value is None or not value or type(value[0]) is Candidate:
        return value
    return [Candidate(*c) for c in value]


def _set_candidates(span: Span, value: Optional[List[Candidate]]) -> None:
    span.doc.user_data[("._.", _CANDIDATES, span.start_char, span.end_char)] = value


Span.set_extension(_CANDIDATES, getter=_get_candidates, setter=_set_candidates, force=True)

#: An `encoder_loader` of `initialize`: () → the encoder (`spacy_el.EncoderFromPath.v1`).
EncoderLoader = Callable[[], Encoder]
#: An `index_loader` of `initialize`: the encoder → its concept index (`spacy_el.IndexFromDir.v1`, `…FromKB.v1`).
IndexLoader = Callable[[Encoder], "ConceptIndex"]


@Language.factory(
    "sap_linker",
    requires=["doc.ents"],
    assigns=["token.ent_kb_id", "span._.kb_candidates", "span._.kb_parts"],
    default_config={
        "top_k": 5,
        "threshold": DEFAULT_THRESHOLD,
        "nil_id": NIL,
        "labels": [],
        "batch_size": 256,
        "resolve_abbreviations": False,
        "rerank_top_k": 5,
        "composite": True,
        "type_filters": {},
        "alternatives_threshold": 0.95,
        "performance": PERFORMANCE,
        "scorer": {"@scorers": "spacy_el.linker_scorer.v1"},
    },
    default_score_weights={"nel_micro_f": 1.0, "nel_micro_p": None, "nel_micro_r": None},
)
def make_sap_linker(
    nlp: Language,
    name: str,
    top_k: int,
    threshold: float,
    nil_id: str,
    labels: List[str],
    batch_size: int,
    resolve_abbreviations: bool,
    composite: bool,
    type_filters: Dict[str, List[str]],
    scorer: Optional[Callable],
    rerank_top_k: int = 5,
    alternatives_threshold: float = 0.95,
    performance: Optional[Dict[str, Any]] = None,
) -> "SapEntityLinker":
    """Create the linker (loads nothing: `initialize` or `from_disk` give it its encoder and index)."""
    return SapEntityLinker(nlp.vocab, name, top_k=top_k, threshold=threshold, nil_id=nil_id, labels=labels,
                           batch_size=batch_size, resolve_abbreviations=resolve_abbreviations,
                           composite=composite, type_filters=type_filters, scorer=scorer,
                           rerank_top_k=rerank_top_k, alternatives_threshold=alternatives_threshold,
                           performance=performance)


def score_linker(examples: Iterable[Example], *, nil_id: str = NIL, **kwargs: Any) -> Dict[str, Any]:
    """spaCy's entity-level link scores (`nel_micro_p/r/f`, per type) with our NIL id."""
    return Scorer.score_links(examples, negative_labels=[nil_id])


def _linkable(text: str) -> bool:
    """Text with a letter or digit: punctuation and whitespace name no concept."""
    return any(c.isalnum() for c in text)


@registry.scorers("spacy_el.linker_scorer.v1")
def make_linker_scorer() -> Callable:
    return score_linker


class SapEntityLinker(LinkerStorage, Pipe):
    """Links `doc.ents` to concepts (see the module docstring); not trainable here: the encoder
    is trained by `spacy-el pretrain` / `finetune` and the index built by `build-index`."""

    def __init__(self, vocab: Vocab, name: str = "sap_linker", *, top_k: int = 5,
                 threshold: float = DEFAULT_THRESHOLD, nil_id: str = NIL, labels: Sequence[str] = (),
                 batch_size: int = 256, resolve_abbreviations: bool = False, composite: bool = True,
                 type_filters: Optional[Dict[str, List[str]]] = None,
                 scorer: Optional[Callable] = score_linker, rerank_top_k: int = 5,
                 alternatives_threshold: float = 0.95, performance: Optional[Dict[str, Any]] = None) -> None:
        if top_k < 1:
            raise InputError(f"[components.{name}] top_k={top_k}: use an integer >= 1")
        if batch_size < 1:
            raise InputError(f"[components.{name}] batch_size={batch_size}: use an integer >= 1")
        if rerank_top_k < 1:
            raise InputError(f"[components.{name}] rerank_top_k={rerank_top_k}: use an integer >= 1")
        unknown = sorted(set(performance or {}) - set(PERFORMANCE))
        if unknown:
            raise InputError(f"[components.{name}] performance.{unknown[0]}: not a performance setting; use "
                             f"{', '.join(PERFORMANCE)}")
        self.vocab = vocab
        self.name = name
        self.cfg: Dict[str, Any] = {
            "top_k": top_k, "threshold": threshold, "nil_id": nil_id, "labels": list(labels),
            "batch_size": batch_size, "resolve_abbreviations": resolve_abbreviations, "rerank_top_k": rerank_top_k,
            "composite": composite, "alternatives_threshold": alternatives_threshold,
            "type_filters": {label: list(types) for label, types in (type_filters or {}).items()},
            "performance": PERFORMANCE | dict(performance or {}),
        }
        self.scorer = scorer
        self._encoder: Optional[Encoder] = None
        self._index: Optional[ConceptIndex] = None
        self._reranker: Optional[Any] = None
        #: (id of the index, concept id → names) for the reranker's candidate texts.
        self._names: Optional[tuple[int, Any]] = None
        #: The directory `from_bytes` unpacked into, kept while the encoder and index may read it.
        self._unpacked: Optional[tempfile.TemporaryDirectory] = None
        self._search: Optional[MentionSearch] = None

    # ------------------------------------------------------------------ the two parts
    @property
    def encoder(self) -> Encoder:
        """The encoder (`SapEncoder`, or `OnnxEncoder` for an `export-onnx` directory)."""
        if self._encoder is None:
            raise InputError(
                f"{self.name} has no encoder: give [initialize.components.{self.name}.encoder_loader] "
                "(e.g. @misc = \"spacy_el.EncoderFromPath.v1\") and run nlp.initialize(), or load a saved "
                "pipeline that contains one")
        return self._encoder

    @property
    def index(self) -> ConceptIndex:
        """The ConceptIndex (checked against the encoder when it was set)."""
        if self._index is None:
            raise InputError(
                f"{self.name} has no concept index: give [initialize.components.{self.name}.index_loader] "
                "(e.g. @misc = \"spacy_el.IndexFromDir.v1\" or \"spacy_el.IndexFromKB.v1\") and run "
                "nlp.initialize(), or load a saved pipeline that contains one")
        return self._index

    def set_parts(self, encoder: Encoder, index: ConceptIndex) -> None:
        """Use this encoder and index (the index must have been built with the encoder)."""
        index.check_encoder(encoder)
        for label, types in self.cfg["type_filters"].items():
            index.allowed_rows(types, f"[components.{self.name}] type_filters.{label}")
        self._encoder, self._index = encoder, index
        self._search = None

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, encoder_loader: Optional[Callable] = None,
                   index_loader: Optional[Callable] = None, reranker_loader: Optional[Callable] = None) -> None:
        """Load the encoder and the index through registered loaders, as spaCy's `entity_linker`
        loads its KB through `kb_loader` (`encoder_loader` is an `EncoderLoader`, `index_loader` an
        `IndexLoader`; typed plainly here because spaCy validates these settings). A loader left out keeps the part already set (by
        `from_disk`, `from_bytes` or an earlier `initialize`); the index is always checked
        against the encoder it will be searched with. `reranker_loader` (`spacy_el.RerankerFromPath.v1`)
        adds a reranker over the top candidates."""
        encoder = encoder_loader() if encoder_loader is not None else self._encoder
        if encoder is None:
            self.encoder  # noqa: B018 - raises the error that says how to give one
        assert encoder is not None
        index = index_loader(encoder) if index_loader is not None else self._index
        if index is None:
            self._encoder = encoder
            self.index  # noqa: B018
        assert index is not None
        self.set_parts(encoder, index)
        if reranker_loader is not None:
            self.reranker = reranker_loader()

    @property
    def reranker(self) -> Optional[Any]:
        """The cross-encoder reranking the top candidates (`spacy_el.sap.rerank.settings.Reranker`), or None."""
        return self._reranker

    @reranker.setter
    def reranker(self, reranker: Optional[Any]) -> None:
        from spacy_el.sap.rerank.settings import Reranker

        if reranker is not None and not isinstance(reranker, Reranker):
            raise InputError(f"{self.name}: the reranker must score (context, candidate) pairs "
                             f"(spacy_el.sap.rerank.settings.Reranker), got {type(reranker).__name__}")
        self._reranker = reranker

    # ------------------------------------------------------------------ linking
    def __call__(self, doc: Doc) -> Doc:
        try:
            self._link([doc])
        except Exception as err:  # noqa: BLE001 - spaCy's error handler decides
            self.get_error_handler()(self.name, self, [doc], err)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Link a batch of docs at once: each distinct mention text is embedded once. A batch
        that fails goes to spaCy's error handler (`nlp.set_error_handler`), which raises by default."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            try:
                self._link(docs)
            except Exception as err:  # noqa: BLE001
                error_handler(self.name, self, docs, err)
                continue
            yield from docs

    def _link(self, docs: Sequence[Doc]) -> None:
        labels = set(self.cfg["labels"])
        if any(ALTERNATIVES_KEY in doc.spans for doc in docs):
            self._adopt_alternatives(docs, labels)
        ents = [ent for doc in docs for ent in doc.ents if not labels or ent.label_ in labels]
        if not ents:
            return
        texts = [self._query_text(ent) for ent in ents]
        parts = [composite.split_coordination(t) if self.cfg["composite"] else None for t in texts]
        keys = [self._type_key(ent.label_) for ent in ents]
        wanted: Dict[Optional[tuple], List[str]] = {}
        for key, text, split in zip(keys, texts, parts):
            wanted.setdefault(key, []).extend([text, *(split or [])])
        found = self._candidates_by_type(wanted)
        per_ent = [found[key].get(text, []) for key, text in zip(keys, texts)]
        ranked = self._rerank(ents, texts, per_ent) if self._reranker is not None else per_ent
        nil, threshold, top_k = self.cfg["nil_id"], self.cfg["threshold"], self.cfg["top_k"]
        for ent, key, split, bi, cands in zip(ents, keys, parts, per_ent, ranked):
            cands = cands[:top_k]
            kb_id = cands[0].concept_id if cands and bi[0].score >= threshold else nil  # NIL reads the cosine
            kb_parts = None
            if split:
                part_cands = [found[key].get(p, []) for p in split]
                if composite.prefer_parts(cands, part_cands):
                    kb_id = composite.joined_id(part_cands, threshold, nil)
                    kb_parts = list(zip(split, part_cands))
                    cands = list({p[0].concept_id: p[0] for p in part_cands}.values())
            for token in ent:
                token.ent_kb_id_ = kb_id
            ent._.kb_candidates = cands
            ent._.kb_parts = kb_parts

    def _adopt_alternatives(self, docs: Sequence[Doc], labels: set) -> None:
        """Entities from the tagger's alternatives (`spacy_el.linker.alternatives`)."""
        spans, taken = alternatives.offered(docs, labels)
        wanted: Dict[Optional[tuple], List[str]] = {}
        for span in (s for group in spans for s in group):
            wanted.setdefault(self._type_key(span.label_), []).append(self._query_text(span))
        found = self._candidates_by_type(wanted)

        def best_score(span: Span) -> Optional[float]:
            cands = found[self._type_key(span.label_)].get(self._query_text(span), [])
            return cands[0].score if cands else None

        alternatives.adopt(docs, spans, taken, best_score, self.cfg["alternatives_threshold"])

    def _candidates_by_type(self, wanted: Dict[Optional[tuple], List[str]]) -> Dict[Optional[tuple], Dict[str, list]]:
        """Candidates of each distinct linkable text, per type filter key (`_type_key`)."""
        return {types: self._candidates([t for t in dict.fromkeys(ts) if _linkable(t)], types)
                for types, ts in wanted.items()}

    def _type_key(self, label: str) -> Optional[tuple]:
        """The concept types an entity of this label may link to (`type_filters`), or None for any."""
        filters = self.cfg["type_filters"]
        return tuple(filters[label]) if label in filters else None

    def _rerank(self, ents: Sequence[Span], texts: Sequence[str], cands: List[list]) -> List[list]:
        """The reranker's order of each entity's candidates (`spacy_el.sap.rerank.policy.rerank_spans`)."""
        from spacy_el.sap.rerank.context import concept_names
        from spacy_el.sap.rerank.policy import rerank_spans

        if self._names is None or self._names[0] != id(self.index):
            self._names = (id(self.index), concept_names(self.index.table))
        # the prior's bonus is read on every call: `set_prior` may change it after the names are cached
        return rerank_spans(self._reranker, ents, texts, cands, self._names[1], bonus=self.index.concept_bonus(),
                            top_k=self.cfg["rerank_top_k"])

    def _query_text(self, ent: Span) -> str:
        """The entity's text, or the long form of an abbreviation defined in the doc: spacy-el's
        `el_abbreviation_detector` sets `span._.el_long_form`; scispaCy's `abbreviation_detector`
        sets `span._.long_form`, read when ours is absent so either detector serves the linker."""
        if self.cfg["resolve_abbreviations"]:
            for attr in ("el_long_form", "long_form"):
                long_form = ent._.get(attr) if Span.has_extension(attr) else None
                if long_form is not None:
                    return getattr(long_form, "text", str(long_form))
        return ent.text

    def clear_cache(self) -> None:
        """Forget cached mention vectors and search results (a new encoder or index does this)."""
        if self._search is not None:
            self._search.clear()

    @property
    def search(self) -> MentionSearch:
        """The cached mention search over this encoder and index (`spacy_el.linker.search`)."""
        if self._search is None or self._search.index is not self.index or self._search.encoder is not self.encoder:
            self._search = MentionSearch(self.encoder, self.index)
        return self._search

    def _candidates(self, texts: List[str], types: Optional[tuple] = None) -> Dict[str, list]:
        """Top-k candidates per distinct text (among concepts of `types` when given)."""
        cfg = self.cfg
        k = max(cfg["top_k"], cfg["rerank_top_k"]) if self._reranker is not None else cfg["top_k"]
        allowed = None if types is None else self.index.allowed_rows(types, f"[components.{self.name}] type_filters")
        perf = cfg["performance"]
        return self.search.candidates(texts, k, types=types, allowed=allowed, batch_size=cfg["batch_size"],
                                      cache_size=perf["cache_size"], name_lookup=perf["name_lookup"])
