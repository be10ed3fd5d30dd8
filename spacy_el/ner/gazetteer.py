"""`kb_gazetteer`: marks every place where a name of a knowledge base occurs in a doc (matched
on lower-cased tokens), as spans in `doc.spans[spans_key]`, so that `bilstm_ner` can read "this
token starts / continues a KB name" as a feature (`spacy_el.TokenFeatures.v1`, `gazetteers`).

The names come from the same KB readers the linker's index is built with (MEDIC, OBO, TSV,
concept tables), are stored inside the pipeline already tokenized (`names.txt`, one name per
line, tokens joined by spaces, so loading needs no tokenizer run) and matched with spaCy's
`PhraseMatcher`. Overlapping and nested names are all kept: "breast cancer" also marks "cancer".

Train mentions as a gazetteer (`initialize(train_folds=K)`, no `kb`): the names are the gold entity
texts of the training examples. Used naively the flag would be a perfect oracle on the training
data (every gold mention is a name) and the tagger would learn to trust it, while on new text it
marks only mentions seen in training. So it is built K-fold, as cross-validated dictionary features
are: each training doc is given a fold (a hash of its text), and on a training doc a name found
only in its own fold is not marked. On any other text (dev, test, users' abstracts) every name is
marked. The fold of each training text is kept by hash (`train_folds.json`) with the pipeline, so
training resumed from a saved pipeline marks the same names.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import srsly
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import ensure_path

from spacy_el.io import InputError, atomic_write

NAMES_FILE = "names.txt"
FOLDS_FILE = "train_folds.json"


def _text_key(text: str) -> str:
    """A stable short key of a doc's text (Python's `hash` changes between processes)."""
    return hashlib.blake2b(text.encode("utf8"), digest_size=8).hexdigest()


def _name_of(span: Span) -> str:
    """A span as the gazetteer stores names: its lower-cased tokens joined by single spaces."""
    return " ".join(t.lower_ for t in span if not t.is_space)


@Language.factory(
    "kb_gazetteer",
    assigns=["doc.spans"],
    default_config={"spans_key": "kb_names", "label": "KB", "min_length": 2},
)
def make_kb_gazetteer(nlp: Language, name: str, spans_key: str, label: str, min_length: int) -> "KBGazetteer":
    """Create a `kb_gazetteer`; its names come from `initialize(kb=..., kb_format=...)`."""
    return KBGazetteer(nlp, name, spans_key=spans_key, label=label, min_length=min_length)


class KBGazetteer(Pipe):
    """Finds KB names in docs. `min_length`: names shorter than this many characters are left
    out (one-letter names match everywhere)."""

    def __init__(self, nlp: Language, name: str = "kb_gazetteer", *, spans_key: str = "kb_names",
                 label: str = "KB", min_length: int = 2) -> None:
        self.name = name
        self.vocab = nlp.vocab
        self._make_doc = nlp.make_doc
        self.spans_key = spans_key
        self.label = label
        self.min_length = min_length
        self.names: List[str] = []  # tokenized: tokens joined by single spaces
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        #: Train-mention gazetteer only: name → bit mask of the folds it was seen in, and
        #: training text key → its fold (see the module docstring).
        self.name_folds: Dict[str, int] = {}
        self.doc_folds: Dict[str, int] = {}

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, kb: Optional[str] = None, kb_format: str = "auto",
                   train_folds: int = 0) -> None:
        """Read the names of the KB file `kb` (format `kb_format`: medic, obo, tsv, drug-ner or auto), or,
        with `train_folds` = K ≥ 2 and no `kb`, take the gold entity texts of the training
        examples, K-fold (module docstring)."""
        from spacy_el.kb.readers import read_kb

        setting = f"[initialize.components.{self.name}] kb"
        if train_folds:
            if kb:
                raise ValueError(f"{self.name}: give {setting} or [initialize.components.{self.name}] train_folds, "
                                 "not both (use two gazetteer components for a KB and the train mentions)")
            if train_folds < 2 or get_examples is None:
                raise ValueError(f"{self.name}: train_folds={train_folds} needs an integer >= 2 and the training "
                                 "examples (it is set up by `spacy train` / nlp.initialize(get_examples))")
            self.add_train_mentions(get_examples(), train_folds)
            return
        if not kb:
            raise ValueError(f"{self.name}: no KB given; set {setting} to a KB file (MEDIC, OBO or TSV), "
                             f"or [initialize.components.{self.name}] train_folds for train mentions")
        if not Path(kb).is_file():
            raise ValueError(f"{self.name}: KB file {kb} (setting {setting}) does not exist")
        try:
            table = read_kb(kb, kb_format)
        except InputError as err:
            raise ValueError(f"{self.name}: cannot read the KB of {setting}: {err}") from None
        self.name_folds, self.doc_folds = {}, {}
        self.add_names(table.names, source=f"{kb} ({setting})")

    def add_train_mentions(self, examples: Iterable[Example], folds: int) -> None:
        """Names from the gold entities of `examples`, each remembering its folds (module docstring)."""
        name_folds: Dict[str, int] = {}
        doc_folds: Dict[str, int] = {}
        for eg in examples:
            key = _text_key(eg.reference.text)
            fold = doc_folds.setdefault(key, int(key, 16) % folds)
            for ent in eg.reference.ents:
                if len(ent.text.strip()) >= self.min_length:
                    name = _name_of(ent)
                    name_folds[name] = name_folds.get(name, 0) | (1 << fold)
        self._set_tokenized(sorted(name_folds), source=f"the training examples ({self.name}, train_folds={folds})")
        self.name_folds, self.doc_folds = name_folds, doc_folds

    def add_names(self, names: Iterable[str], source: str = "names") -> None:
        """Replace the names matched by these KB names (lower-cased, deduplicated, shorter than
        `min_length` dropped), tokenized by the pipeline's own tokenizer, as running text is."""
        texts = {n.strip().lower() for n in names if len(n.strip()) >= self.min_length}
        tokenized = {" ".join(t.text for t in self._make_doc(text) if not t.is_space) for text in texts}
        self._set_tokenized(sorted(tokenized), source)

    def _set_tokenized(self, names: List[str], source: str) -> None:
        names = [n for n in names if n]
        if not names:
            raise ValueError(f"{self.name}: the KB {source} has no names of {self.min_length}+ characters")
        self.names = names
        self.matcher = PhraseMatcher(self.vocab, attr="LOWER")
        # One pattern id for all names: the matcher keeps a single callback-free entry.
        self.matcher.add(self.label, [Doc(self.vocab, words=n.split(" ")) for n in names])

    def __call__(self, doc: Doc) -> Doc:
        spans = [Span(doc, start, end, label=self.label) for _, start, end in self.matcher(doc)] if len(doc) else []
        if self.doc_folds and spans:
            fold = self.doc_folds.get(_text_key(doc.text))
            if fold is not None:  # a training doc: names seen only in its own fold are not marked
                own = 1 << fold
                spans = [s for s in spans if self.name_folds.get(_name_of(s), 0) != own]
        doc.spans[self.spans_key] = SpanGroup(doc, name=self.spans_key, spans=spans)
        return doc

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_write(path / NAMES_FILE) as f:
            f.writelines(f"{name}\n" for name in self.names)
        if self.doc_folds:
            with atomic_write(path / FOLDS_FILE) as f:
                json.dump({"names": self.name_folds, "docs": self.doc_folds}, f)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "KBGazetteer":
        path = ensure_path(path) / NAMES_FILE
        if not path.is_file():
            raise ValueError(f"{self.name}: {path} is missing; re-save the pipeline after initializing {self.name}")
        self._set_tokenized(path.read_text(encoding="utf8").splitlines(), source=str(path))
        folds = path.parent / FOLDS_FILE
        self._set_folds(json.loads(folds.read_text(encoding="utf8")) if folds.is_file() else {})
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps({"names": self.names, "folds": {"names": self.name_folds, "docs": self.doc_folds}})

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = tuple()) -> "KBGazetteer":
        msg = srsly.msgpack_loads(data)
        self._set_tokenized(msg["names"], source="bytes")
        self._set_folds(msg["folds"])
        return self

    def _set_folds(self, folds: dict) -> None:
        self.name_folds, self.doc_folds = dict(folds.get("names", {})), dict(folds.get("docs", {}))
