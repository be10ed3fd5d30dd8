"""`sap_linker`: links every entity to KB concepts by embedding its text with an encoder
(`spacy_el.models.Encoder`) and searching a ConceptIndex. It runs after any NER (`bilstm_ner`,
spaCy's `ner`, an `entity_ruler`). One component class of ~400 lines with its docs, because its
configuration, loading, linking and serialisation share its state; the mention search and its
caches are `spacy_el.linker.search`, coordinations `spacy_el.linker.composite`.

Per entity it sets
- `ent.kb_id_` (through `token.ent_kb_id`): the best concept, or `nil_id` when its cosine is
  below `threshold` or the entity holds no letter or digit (punctuation and whitespace are never
  linked); entities whose label is not in `labels` are left untouched;
- `ent._.kb_candidates`: `[Candidate(concept_id, score, name, source), …]`, best first, up to
  `top_k` (a `Candidate` is a named tuple; `source` is "kb" or the corpus file an alias came from).
  The candidates live in `doc.user_data`, so they survive `Doc.to_bytes`/`from_bytes` and
  `nlp.pipe(n_process=…)`; the getter turns what serialisation made plain lists back into
  `Candidate`s.

`composite` (on by default): an entity that coordinates several concepts ("breast and ovarian
cancer") is split into parts, each part linked, and `ent.kb_id_` set to the parts' concepts
joined with `|`, with `ent._.kb_parts` holding each part's candidates (`spacy_el.linker.composite`).

`type_filters` (`{label: [type, …]}`, e.g. `{"Chemical": ["CHEM"]}`): entities of that label
are linked only to concepts carrying one of those types (the index's `types.tsv`, see
`spacy_el.kb.types`), restricted inside the FAISS search so `top_k` candidates still come back.

Each distinct encoder input is embedded and searched once per batch, and recent ones are cached
(`spacy_el.linker.search`: texts an uncased encoder cannot tell apart are one input;
`name_lookup`, on by default, takes a KB name's stored vector from the index instead of running
the encoder), so links are those of encoding every entity, at a fraction of the cost.

The encoder and the index are heavy state, shaped as spaCy's `entity_linker` shapes its KB:
nothing is loaded when the component is created; `initialize` takes registered loaders
(`encoder_loader`, e.g. `spacy_el.EncoderFromPath.v1`; `index_loader`, e.g.
`spacy_el.IndexFromDir.v1` or `spacy_el.IndexFromKB.v1`, see `spacy_el.build`), and
`to_disk`/`to_bytes` carry both, so a saved or packaged pipeline loads without the original paths.
A saved index is memory-mapped (its inverted lists, table columns and, with `build-index
--store-vectors`, its vectors); with `prefetch_index` (on by default) loading starts reading those
files into the page cache in the background, so the first searches after a cold start do not wait on
random disk reads (`ConceptIndex.load(prefetch=True)`).

Alternatives from the tagger (`alternatives_key`, off by default): `bilstm_ner` with the same
key writes the entity spans its best path left out but its CRF still finds likely to
`doc.spans[key]`. Before linking, each of those that overlaps no entity (most probable first) and
whose best cosine reaches `alternatives_threshold` becomes an entity, and is then linked as any
other: the KB settles what the tagger could not (TaggerOne's joint NER and normalisation, as a
decision over the tagger's n-best spans). The threshold sits above the NIL threshold, because a
span the tagger doubts needs stronger evidence from the KB than one it chose.

Reranking (optional, `reranker_loader` in `initialize`, e.g. `spacy_el.RerankerFromPath.v1`): a
cross-encoder (`spacy_el.sap.rerank`) reads each entity in a window of its doc with each of its first
`rerank_top_k` candidates and reorders them by cosine + weight × its score. It reads only the
entities whose first candidate it could overturn (the lead in cosine + prior below weight × the
score spread it showed on dev, `worth_reranking`): the others' links would not change. A
`rerank_margin`, when set, reads instead only entities whose best cosine leads the second by less
(near-ties: faster, and some accuracy given up). Reranked candidates carry both scores (`score`,
`rerank_score`); the NIL decision still reads the bi-encoder's best cosine. The reranker is saved
with the pipeline (`reranker/`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import ensure_path, minibatch, registry
from spacy.util import from_bytes as util_from_bytes
from spacy.util import from_disk as util_from_disk
from spacy.util import to_bytes as util_to_bytes
from spacy.util import to_disk as util_to_disk
from spacy.vocab import Vocab

from spacy_el.io import InputError, bytes_to_dir, dir_to_bytes
from spacy_el.kb.ranking import Candidate
from spacy_el.linker import composite
from spacy_el.linker.search import MentionSearch, SharedCache
from spacy_el.models import Encoder

if TYPE_CHECKING:  # FAISS is imported when an index is loaded, not when spaCy registers the factory
    from spacy_el.kb.index import ConceptIndex

NIL = "NIL"
#: The default NIL threshold: the cosine below which the best concept is not trusted. Chosen on
#: NCBI-disease and BC5CDR-disease dev as the largest value that costs at most 0.5 Acc@1 on real
#: mentions while most non-mention spans stay unlinked (benchmarks/nil_threshold.py).
DEFAULT_THRESHOLD = 0.7
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
        "cache_size": 50_000,
        "resolve_abbreviations": False,
        "name_lookup": True,
        "rerank_top_k": 5,
        "rerank_margin": None,
        "composite": True,
        "type_filters": {},
        "prefetch_index": True,
        "alternatives_key": None,
        "alternatives_threshold": 0.95,
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
    cache_size: int,
    resolve_abbreviations: bool,
    name_lookup: bool,
    composite: bool,
    type_filters: Dict[str, List[str]],
    scorer: Optional[Callable],
    rerank_top_k: int = 5,
    rerank_margin: Optional[float] = None,
    prefetch_index: bool = True,
    alternatives_key: Optional[str] = None,
    alternatives_threshold: float = 0.95,
) -> "SapEntityLinker":
    """Create the linker (loads nothing: `initialize` or `from_disk` give it its encoder and index)."""
    return SapEntityLinker(nlp.vocab, name, top_k=top_k, threshold=threshold, nil_id=nil_id, labels=labels,
                           batch_size=batch_size, cache_size=cache_size,
                           resolve_abbreviations=resolve_abbreviations, name_lookup=name_lookup,
                           composite=composite, type_filters=type_filters, scorer=scorer,
                           rerank_top_k=rerank_top_k, rerank_margin=rerank_margin,
                           prefetch_index=prefetch_index, alternatives_key=alternatives_key,
                           alternatives_threshold=alternatives_threshold)


def score_linker(examples: Iterable[Example], *, nil_id: str = NIL, **kwargs: Any) -> Dict[str, Any]:
    """spaCy's entity-level link scores (`nel_micro_p/r/f`, per type) with our NIL id."""
    return Scorer.score_links(examples, negative_labels=[nil_id])


def _linkable(text: str) -> bool:
    """Text with a letter or digit: punctuation and whitespace name no concept."""
    return any(c.isalnum() for c in text)


@registry.scorers("spacy_el.linker_scorer.v1")
def make_linker_scorer() -> Callable:
    return score_linker


class SapEntityLinker(Pipe):
    """Links `doc.ents` to concepts (see the module docstring); not trainable here: the encoder
    is trained by `spacy-el pretrain` / `finetune` and the index built by `build-index`."""

    def __init__(self, vocab: Vocab, name: str = "sap_linker", *, top_k: int = 5,
                 threshold: float = DEFAULT_THRESHOLD, nil_id: str = NIL, labels: Sequence[str] = (),
                 batch_size: int = 256, cache_size: int = 50_000, resolve_abbreviations: bool = False,
                 name_lookup: bool = True, composite: bool = True,
                 type_filters: Optional[Dict[str, List[str]]] = None,
                 scorer: Optional[Callable] = score_linker, rerank_top_k: int = 5,
                 rerank_margin: Optional[float] = None, prefetch_index: bool = True,
                 alternatives_key: Optional[str] = None, alternatives_threshold: float = 0.95) -> None:
        if top_k < 1:
            raise InputError(f"[components.{name}] top_k={top_k}: use an integer >= 1")
        if batch_size < 1:
            raise InputError(f"[components.{name}] batch_size={batch_size}: use an integer >= 1")
        if rerank_top_k < 1:
            raise InputError(f"[components.{name}] rerank_top_k={rerank_top_k}: use an integer >= 1")
        self.vocab = vocab
        self.name = name
        self.cfg: Dict[str, Any] = {
            "top_k": top_k, "threshold": threshold, "nil_id": nil_id, "labels": list(labels),
            "batch_size": batch_size, "cache_size": cache_size, "resolve_abbreviations": resolve_abbreviations,
            "name_lookup": name_lookup, "rerank_top_k": rerank_top_k, "rerank_margin": rerank_margin,
            "composite": composite, "prefetch_index": prefetch_index,
            "alternatives_key": alternatives_key, "alternatives_threshold": alternatives_threshold,
            "type_filters": {label: list(types) for label, types in (type_filters or {}).items()},
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
        #: A mention cache shared with other processes running this pipeline (`spacy_el.linker.search`;
        #: the Ray engine of `spacy-el annotate` sets one), or None. Runtime state: never saved.
        self.shared_cache: Optional[SharedCache] = None

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
        """The cross-encoder reranking the top candidates (`spacy_el.sap.rerank.model.Reranker`), or None."""
        return self._reranker

    @reranker.setter
    def reranker(self, reranker: Optional[Any]) -> None:
        from spacy_el.sap.rerank.model import Reranker

        if reranker is not None and not isinstance(reranker, Reranker):
            raise InputError(f"{self.name}: the reranker must score (context, candidate) pairs "
                             f"(spacy_el.sap.rerank.model.Reranker), got {type(reranker).__name__}")
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
        if self.cfg["alternatives_key"] is not None:
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
        """Make entities of the tagger's alternatives (`doc.spans[alternatives_key]`) that overlap no
        entity and whose best cosine reaches `alternatives_threshold`, most probable first."""
        key, floor = self.cfg["alternatives_key"], self.cfg["alternatives_threshold"]
        offered: List[List[Span]] = []
        taken: List[set] = []
        for doc in docs:
            group = doc.spans[key] if key in doc.spans else []
            scores = group.attrs.get("scores") if len(group) else None
            order = sorted(range(len(group)), key=lambda i: -scores[i]) if scores else range(len(group))
            taken.append({t for ent in doc.ents for t in range(ent.start, ent.end)})
            offered.append([group[i] for i in order if (not labels or group[i].label_ in labels)
                            and not taken[-1].intersection(range(group[i].start, group[i].end))])
        wanted: Dict[Optional[tuple], List[str]] = {}
        for span in (s for spans in offered for s in spans):
            wanted.setdefault(self._type_key(span.label_), []).append(self._query_text(span))
        found = self._candidates_by_type(wanted)
        for doc, spans, used in zip(docs, offered, taken):
            adopted = []
            for span in spans:
                cands = found[self._type_key(span.label_)].get(self._query_text(span), [])
                if cands and cands[0].score >= floor and not used.intersection(range(span.start, span.end)):
                    adopted.append(span)
                    used.update(range(span.start, span.end))
            if adopted:
                doc.ents = list(doc.ents) + adopted

    def _candidates_by_type(self, wanted: Dict[Optional[tuple], List[str]]) -> Dict[Optional[tuple], Dict[str, list]]:
        """Candidates of each distinct linkable text, per type filter key (`_type_key`)."""
        return {types: self._candidates([t for t in dict.fromkeys(ts) if _linkable(t)], types)
                for types, ts in wanted.items()}

    def _type_key(self, label: str) -> Optional[tuple]:
        """The concept types an entity of this label may link to (`type_filters`), or None for any."""
        filters = self.cfg["type_filters"]
        return tuple(filters[label]) if label in filters else None

    def _rerank(self, ents: Sequence[Span], texts: Sequence[str], cands: List[list]) -> List[list]:
        """The reranker's order of each entity's candidates (`spacy_el.sap.rerank.model.rerank_spans`)."""
        from spacy_el.sap.rerank.context import concept_names
        from spacy_el.sap.rerank.model import rerank_spans

        if self._names is None or self._names[0] != id(self.index):
            self._names = (id(self.index), concept_names(self.index.table))
        # the prior's bonus is read on every call: `set_prior` may change it after the names are cached
        return rerank_spans(self._reranker, ents, texts, cands, self._names[1], bonus=self.index.concept_bonus(),
                            top_k=self.cfg["rerank_top_k"], margin=self.cfg["rerank_margin"])

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
        self._search.shared = self.shared_cache
        return self._search

    def _candidates(self, texts: List[str], types: Optional[tuple] = None) -> Dict[str, list]:
        """Top-k candidates per distinct text (among concepts of `types` when given)."""
        cfg = self.cfg
        k = max(cfg["top_k"], cfg["rerank_top_k"]) if self._reranker is not None else cfg["top_k"]
        allowed = None if types is None else self.index.allowed_rows(types, f"[components.{self.name}] type_filters")
        return self.search.candidates(texts, k, types=types, allowed=allowed, batch_size=cfg["batch_size"],
                                      cache_size=cfg["cache_size"], name_lookup=cfg["name_lookup"])

    # ------------------------------------------------------------------ disk and bytes
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """`encoder/` (an HF directory, or an ONNX export) and `index/` (FAISS + table + meta): the pipeline
        then carries everything it needs and loads without the original paths."""
        writers: Dict[str, Callable] = {"encoder": lambda p: self.encoder.save(p), "index": lambda p: self.index.save(p)}
        if self._reranker is not None:
            writers["reranker"] = lambda p: self._reranker.save(p)
        util_to_disk(ensure_path(path), writers, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "SapEntityLinker":
        from spacy_el.sap.encoders import load_encoder

        path = ensure_path(path)
        parts: Dict[str, Any] = {}
        util_from_disk(path, {"encoder": lambda p: parts.__setitem__("encoder", load_encoder(p)),
                              "index": lambda p: parts.__setitem__("index", p),
                              "reranker": lambda p: parts.__setitem__("reranker", _load_reranker(p) if p.exists()
                                                                      else None)}, exclude)
        self._set_loaded(parts.get("encoder"), parts.get("index"), mmap=True)
        self._reranker = parts.get("reranker")
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The encoder's and the index's directories as bytes (their files in a msgpack map), so
        `nlp.to_bytes()` carries the whole linker."""
        getters: Dict[str, Callable] = {"encoder": lambda: dir_to_bytes(self.encoder.save),
                                        "index": lambda: dir_to_bytes(self.index.save)}
        if self._reranker is not None:
            getters["reranker"] = lambda: dir_to_bytes(self._reranker.save)
        return util_to_bytes(getters, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "SapEntityLinker":
        """Unpack `to_bytes` into a private temporary directory (kept while this component lives:
        an ONNX encoder re-saves from its files) and load the encoder and index from it."""
        from spacy_el.sap.encoders import load_encoder

        unpacked = tempfile.TemporaryDirectory(prefix="sap_linker.")
        root = Path(unpacked.name)
        parts: Dict[str, Any] = {}

        def unpack(key: str, data: bytes) -> None:
            bytes_to_dir(data, root / key)
            loaders = {"encoder": load_encoder, "reranker": _load_reranker}
            parts[key] = loaders[key](root / key) if key in loaders else root / key

        util_from_bytes(bytes_data, {"encoder": lambda b: unpack("encoder", b),
                                     "index": lambda b: unpack("index", b),
                                     "reranker": lambda b: unpack("reranker", b)}, exclude)
        self._set_loaded(parts.get("encoder"), parts.get("index"), mmap=False)
        self._reranker = parts.get("reranker")
        self._unpacked = unpacked
        return self

    def _set_loaded(self, encoder: Optional[Encoder], index_dir: Optional[Path], mmap: bool) -> None:
        if encoder is not None:
            self._encoder = encoder
        if index_dir is not None:
            from spacy_el.kb.index import ConceptIndex

            self._index = ConceptIndex.load(index_dir, self._encoder, mmap=mmap, prefetch=self.cfg["prefetch_index"])
        self._search = None


def _load_reranker(path: Path):
    from spacy_el.sap.rerank.model import load_reranker

    return load_reranker(path)

