"""`bilstm_ner`: a trainable spaCy component that tags tokens with BIO tags using the
`spacy_el.BiLSTMTagger.v1` model and turns them into `doc.ents`.

Modelled on spaCy's own `Tagger`: the model scores each token, the loss is a masked
cross-entropy (tokens without gold are ignored), and decoding is a Viterbi search restricted to
valid BIO sequences (no `I-X` unless it follows `B-X`/`I-X`), so every output is a proper span set.
"""

from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example, biluo_tags_to_spans, iob_to_biluo, validate_examples
from spacy.training import validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, SequenceCategoricalCrossentropy, set_dropout_rate
from thinc.types import Floats2d, Ints1d

# Imported for its side effect: registers "spacy_el.BiLSTMTagger.v1" for the default config.
from spacy_el.ner import model as _model  # noqa: F401

default_model_config = """
[model]
@architectures = "spacy_el.BiLSTMTagger.v1"
embed_width = 128
hidden_width = 128
depth = 1
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
include_static_vectors = false
"""
DEFAULT_MODEL = Config().from_str(default_model_config)["model"]

#: Viterbi score for a forbidden transition (finite, so sums never become NaN).
_FORBIDDEN = -1e9


@Language.factory(
    "bilstm_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={"model": DEFAULT_MODEL, "scorer": {"@scorers": "spacy.ner_scorer.v1"}},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bilstm_ner(nlp: Language, name: str, model: Model, scorer: Optional[Callable]) -> "BiLSTMEntityRecognizer":
    """Create a `bilstm_ner` component (labels come from `initialize`)."""
    return BiLSTMEntityRecognizer(nlp.vocab, model, name, scorer=scorer)


class BiLSTMEntityRecognizer(TrainablePipe):
    """Named-entity recognizer that predicts one BIO tag per token."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "bilstm_ner",
        *,
        scorer: Optional[Callable] = get_ner_prf,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict[str, list] = {"labels": []}

    # -- labels -------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple:
        """Entity types (e.g. PER, LOC), in tag-index order."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        """The BIO tag set: index 0 is O, then B-/I- for each label."""
        return ["O"] + [f"{prefix}-{label}" for label in self.labels for prefix in ("B", "I")]

    def add_label(self, label: str) -> int:
        """Add an entity type before `initialize` (the output layer is sized from the labels)."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"bilstm_ner: label must be a plain entity type like 'PER', got {label!r}")
        if label in self.labels:
            return 0
        if self.model.get_ref("output_layer").has_dim("nO"):
            raise ValueError(
                f"bilstm_ner: cannot add label {label!r} after the model is initialized; "
                "pass all labels to initialize (e.g. [initialize.components.bilstm_ner.labels])"
            )
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Set the labels (given, or every entity type in the examples) and size the model."""
        validate_get_examples(get_examples, "BiLSTMEntityRecognizer.initialize")
        if labels is None:
            labels = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
        labels = list(dict.fromkeys(labels))
        bad = [label for label in labels if not isinstance(label, str) or not label]
        if bad or not labels:
            raise ValueError(
                f"bilstm_ner: no usable entity labels ({bad!r}); give training examples with entities "
                "or pass labels=['PER', ...] to initialize ([initialize.components.bilstm_ner.labels])"
            )
        output_layer = self.model.get_ref("output_layer")
        n_tags = 1 + 2 * len(labels)
        if output_layer.has_param("W") and output_layer.get_dim("nO") != n_tags:
            raise ValueError(
                f"bilstm_ner: the model was already initialized for {output_layer.get_dim('nO')} tags; "
                f"{len(labels)} labels need {n_tags}: start from a fresh pipeline"
            )
        if self.model.attrs.get("include_static_vectors") and self.vocab.vectors.shape[0] == 0:
            raise ValueError(
                "bilstm_ner: the model setting 'include_static_vectors' is true but the pipeline has "
                "no word vectors; set [initialize] vectors (e.g. --paths.vectors DIR from "
                "`python -m spacy_el init-vectors DIR`) or set include_static_vectors = false"
            )
        self.cfg["labels"] = labels  # re-initializing may rename labels, not change their number
        for label in labels:
            self.vocab.strings.add(label)
        doc_sample = [eg.reference for eg in islice(get_examples(), 10) if len(eg.reference)]
        output_layer.set_dim("nO", n_tags, force=True)  # also overrides a wrong config 'nO'
        self.model.initialize(X=doc_sample or None)

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> List[Ints1d]:
        """Best valid BIO tag ids per doc (empty docs skip the model: LSTMs cannot take length 0)."""
        docs = list(docs)
        busy = [doc for doc in docs if len(doc)]
        scores = iter(self.model.predict(busy) if busy else [])
        logits = [self.model.ops.to_numpy(next(scores)) if len(doc) else np.zeros((0, len(self.tags)), "f") for doc in docs]
        return viterbi_bio(logits, self.labels)

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List[Ints1d]) -> None:
        tags = self.tags
        for doc, ids in zip(docs, tag_ids):
            biluo = iob_to_biluo([tags[i] for i in ids])
            doc.ents = biluo_tags_to_spans(doc, biluo)

    # -- training -----------------------------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Callable] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "BiLSTMEntityRecognizer.update")
        examples = [eg for eg in examples if len(eg.predicted)]
        if not examples:
            return losses
        set_dropout_rate(self.model, drop)
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]):
        """Cross-entropy against the gold BIO tags; `None` (missing or unknown-label) tokens
        get no gradient."""
        validate_examples(examples, "BiLSTMEntityRecognizer.get_loss")
        loss_func = SequenceCategoricalCrossentropy(names=self.tags, normalize=False)
        truths = [self._gold_bio(eg) for eg in examples]
        d_scores, loss = loss_func(scores, truths)
        if self.model.ops.xp.isnan(loss):
            raise ValueError("bilstm_ner: loss is NaN; lower [training.optimizer] learn_rate")
        return float(loss), d_scores

    def _gold_bio(self, example: Example) -> List[Optional[str]]:
        """Gold tags aligned to the predicted tokens, BILUO → BIO; missing ('-'/None) and labels
        the model does not know become None so the loss ignores them."""
        known = set(self.labels)
        x, y = example.predicted, example.reference
        if len(x) == len(y) and (x.to_array(ORTH) == y.to_array(ORTH)).all():
            # Same tokens (the usual case with converted corpora): read the gold IOB directly,
            # skipping the much slower character alignment.
            strings = self.vocab.strings
            fast: List[Optional[str]] = []
            for iob, ent_type in y.to_array([ENT_IOB, ENT_TYPE]).tolist():
                if iob == 2:
                    fast.append("O")
                elif iob == 0 or strings[ent_type] not in known:
                    fast.append(None)
                else:
                    fast.append(("B-" if iob == 3 else "I-") + strings[ent_type])
            return fast
        out: List[Optional[str]] = []
        for tag in example.get_aligned_ner():
            if tag is None or tag == "-" or tag == "":
                out.append(None)
            elif tag == "O":
                out.append("O")
            else:
                prefix, label = tag.split("-", 1)
                if label not in known:
                    out.append(None)
                else:
                    out.append(("B-" if prefix in ("B", "U") else "I-") + label)
        return out


def bio_transitions(labels: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(start, transition) score arrays for the tag order of `BiLSTMEntityRecognizer.tags`:
    0 where allowed, a large negative number where the BIO scheme forbids it."""
    n_tags = 1 + 2 * len(labels)
    trans = np.zeros((n_tags, n_tags), dtype="f")
    start = np.zeros((n_tags,), dtype="f")
    for k in range(len(labels)):
        b, i = 1 + 2 * k, 2 + 2 * k
        trans[:, i] = _FORBIDDEN  # I-X only after B-X or I-X
        trans[b, i] = 0.0
        trans[i, i] = 0.0
        start[i] = _FORBIDDEN
    return start, trans


def viterbi_bio(logits: List[np.ndarray], labels: Sequence[str], max_cells: int = 200_000) -> List[np.ndarray]:
    """Most probable *valid* BIO tag sequence per doc, from per-token logits.

    Docs are sorted by length and decoded in padded groups (vectorised over docs and tags,
    looping over time), with at most `max_cells` padded tokens per group so one very long doc
    does not blow up memory.
    """
    start, trans = bio_transitions(labels)
    results: List[np.ndarray] = [np.zeros((0,), dtype="i")] * len(logits)
    order = sorted(range(len(logits)), key=lambda i: -len(logits[i]))
    order = [i for i in order if len(logits[i])]
    pos = 0
    while pos < len(order):
        longest = len(logits[order[pos]])
        size = max(1, max_cells // longest)
        group = order[pos : pos + size]
        pos += len(group)
        for i, path in zip(group, _viterbi_group([logits[i] for i in group], start, trans)):
            results[i] = path
    return results


def _viterbi_group(logits: List[np.ndarray], start: np.ndarray, trans: np.ndarray) -> List[np.ndarray]:
    lengths = np.array([len(x) for x in logits])
    n_docs, n_steps, n_tags = len(logits), int(lengths.max()), trans.shape[0]
    scores = np.zeros((n_docs, n_steps, n_tags), dtype="f")
    for d, x in enumerate(logits):
        x = x - x.max(axis=1, keepdims=True)
        scores[d, : len(x)] = x - np.log(np.exp(x).sum(axis=1, keepdims=True))  # log-softmax
    identity = np.broadcast_to(np.arange(n_tags), (n_docs, n_tags))
    back = np.zeros((n_docs, n_steps, n_tags), dtype="i")
    delta = scores[:, 0] + start
    for t in range(1, n_steps):
        cand = delta[:, :, None] + trans[None]  # (docs, from, to)
        best = cand.argmax(axis=1)
        new = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0] + scores[:, t]
        active = (t < lengths)[:, None]
        delta = np.where(active, new, delta)
        back[:, t] = np.where(active, best, identity)  # padding steps keep the path as is
    paths = np.zeros((n_docs, n_steps), dtype="i")
    current = delta.argmax(axis=1)
    rows = np.arange(n_docs)
    for t in range(n_steps - 1, -1, -1):
        paths[:, t] = current
        current = back[rows, t, current]
    return [paths[d, :n] for d, n in enumerate(lengths)]
