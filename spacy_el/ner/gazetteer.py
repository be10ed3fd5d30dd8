"""`kb_gazetteer`: marks every place where a name of a knowledge base occurs in a doc (matched
on lower-cased tokens), as spans in `doc.spans[spans_key]`, so that `bilstm_ner` can read "this
token starts / continues a KB name" as a feature (`spacy_el.TokenFeatures.v1`, `gazetteers`).

The names come from the same KB readers the linker's index is built with (MEDIC, OBO, TSV,
concept tables), are stored inside the pipeline already tokenized (`names.txt`, one name per
line, tokens joined by spaces, so loading needs no tokenizer run) and matched with spaCy's
`PhraseMatcher`. Overlapping and nested names are all kept: "breast cancer" also marks "cancer".
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Optional

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import ensure_path

from spacy_el.io import InputError, atomic_write

NAMES_FILE = "names.txt"


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

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, kb: Optional[str] = None, kb_format: str = "auto") -> None:
        """Read the names of the KB file `kb` (format `kb_format`: medic, obo, tsv or auto)."""
        from spacy_el.kb.readers import read_kb

        setting = f"[initialize.components.{self.name}] kb"
        if not kb:
            raise ValueError(f"{self.name}: no KB given; set {setting} to a KB file (MEDIC, OBO or TSV)")
        if not Path(kb).is_file():
            raise ValueError(f"{self.name}: KB file {kb} (setting {setting}) does not exist")
        try:
            table = read_kb(kb, kb_format)
        except InputError as err:
            raise ValueError(f"{self.name}: cannot read the KB of {setting}: {err}") from None
        self.add_names(table.names, source=f"{kb} ({setting})")

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
        doc.spans[self.spans_key] = SpanGroup(doc, name=self.spans_key, spans=spans)
        return doc

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_write(path / NAMES_FILE) as f:
            f.writelines(f"{name}\n" for name in self.names)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "KBGazetteer":
        path = ensure_path(path) / NAMES_FILE
        if not path.is_file():
            raise ValueError(f"{self.name}: {path} is missing; re-save the pipeline after initializing {self.name}")
        self._set_tokenized(path.read_text(encoding="utf8").splitlines(), source=str(path))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return "\n".join(self.names).encode("utf8")

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = tuple()) -> "KBGazetteer":
        self._set_tokenized(data.decode("utf8").split("\n"), source="bytes")
        return self
