"""`bilstm_ner`: a trainable spaCy component that tags tokens with BIO tags using a
`spacy_el.BiLSTMTagger.v2` model (BiLSTM + CRF by default) and turns them into `doc.ents`.

Modelled on spaCy's own `Tagger`: the model scores each token and decoding is a Viterbi search
restricted to valid BIO sequences (no `I-X` unless it follows `B-X`/`I-X`), so every output is a
proper span set. The loss is sequence-level when the model ends in a CRF layer
(`spacy_el.BiLSTMTagger.v2` with `crf = true`: `spacy_el.ner.crf`), otherwise a per-token
cross-entropy; either way tokens without gold annotation give no gradient. Several trained CRF
taggers can serve as one (`spacy_el.TaggerEnsemble.v1`, `spacy_el.ner.ensemble`): the pipe sees
one model whose emissions and CRF scores are their averages.

Corpora with different label sets (NCBI-disease annotates diseases only, BC5CDR diseases and
chemicals) train one tagger when a doc declares the labels it does not annotate
(`convert-ner --unannotated-label`): its O tokens then admit those labels in the CRF's gold
constraint, instead of teaching the tagger that an unannotated chemical is not one.

Alternatives for the linker (`alternatives_key`): besides its best path, the tagger can write
the entity spans that path left out but that its CRF still gives probability >=
`alternatives_min_prob` (`spacy_el.ner.crf.span_probabilities`) to
`doc.spans[alternatives_key]`, their probabilities in the group's `attrs["scores"]` (as spaCy's
`spancat` stores its scores). `sap_linker` reads the group `"ner_alternatives"`
(`spacy_el.linker.alternatives.ALTERNATIVES_KEY`), so with that key it makes those its KB knows
well into entities: a joint decision, as TaggerOne's, on the mentions the tagger is unsure of.

Distillation: a training doc may carry a teacher CRF's targets in `doc.user_data` (written by
`spacy-el teacher-targets`, `spacy_el.ner.distill`, e.g. from such an ensemble); the CRF loss then
mixes in, at `teacher_weight`, the expected loss under the teacher, so one fast tagger learns what
several slow ones agree on.
"""

from dataclasses import dataclass
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, biluo_tags_to_spans, iob_to_biluo, validate_examples
from spacy.training import validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, SequenceCategoricalCrossentropy, set_dropout_rate
from thinc.types import Floats2d, Ints1d

from spacy_el.ner.crf import bio_constraints, bio_tags, crf_loss, log_softmax, span_probabilities, viterbi
from spacy_el.ner.convert import UNANNOTATED_KEY
from spacy_el.ner.distill import TEACHER_KEY

default_model_config = """
[model]
@architectures = "spacy_el.BiLSTMTagger.v2"
hidden_width = 128
depth = 1
crf = true
feature_dropout = null

[model.features]
@architectures = "spacy_el.TokenFeatures.v1"
embed_width = 128
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
include_static_vectors = false
char_width = 32
char_length = 16
gazetteers = []
transformer = null
transformer_width = 0
word_dropout = 0.0
"""
DEFAULT_MODEL = Config().from_str(default_model_config)["model"]


@Language.factory(
    "bilstm_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={"model": DEFAULT_MODEL, "scorer": {"@scorers": "spacy.ner_scorer.v1"}, "teacher_weight": 0.8,
                    "alternatives_key": None, "alternatives_min_prob": 0.2},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bilstm_ner(nlp: Language, name: str, model: Model, scorer: Optional[Callable],
                    teacher_weight: float, alternatives_key: Optional[str] = None,
                    alternatives_min_prob: float = 0.2) -> "BiLSTMEntityRecognizer":
    """Create a `bilstm_ner` component (labels come from `initialize`). `teacher_weight`: the
    share of the loss taken from a teacher's targets, on training docs that carry them.
    `alternatives_key`: where to write the likely spans the best path left out (None: nowhere)."""
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"bilstm_ner: teacher_weight must be in [0, 1], got {teacher_weight} "
                         "([components.bilstm_ner] teacher_weight)")
    if not 0.0 < alternatives_min_prob <= 1.0:
        raise ValueError(f"bilstm_ner: alternatives_min_prob must be in (0, 1], got {alternatives_min_prob} "
                         f"([components.{name}] alternatives_min_prob)")
    return BiLSTMEntityRecognizer(nlp.vocab, model, name, scorer=scorer, teacher_weight=teacher_weight,
                                  alternatives_key=alternatives_key, alternatives_min_prob=alternatives_min_prob)


@dataclass
class Tagging:
    """What `predict` returns: the best valid BIO path per doc (tag ids) and, with
    `alternatives_key`, each doc's likely entity spans as (start, end, label index, probability)."""

    tag_ids: List[Ints1d]
    alternatives: Optional[List[List[Tuple[int, int, int, float]]]] = None


class BiLSTMEntityRecognizer(TrainablePipe):
    """Named-entity recognizer that predicts one BIO tag per token."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "bilstm_ner",
        *,
        scorer: Optional[Callable] = get_ner_prf,
        teacher_weight: float = 0.8,
        alternatives_key: Optional[str] = None,
        alternatives_min_prob: float = 0.2,
    ) -> None:
        self.vocab = vocab
        self.teacher_weight = teacher_weight
        self.alternatives_key = alternatives_key
        self.alternatives_min_prob = alternatives_min_prob
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
        return bio_tags(self.labels)

    @property
    def has_crf(self) -> bool:
        """Whether the model ends in a CRF layer (sequence-level loss, learned transitions)."""
        return self.model.has_ref("crf")

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
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10) if len(eg.predicted)]
        if nlp is not None:  # features such as KB-name flags come from the components before this one
            for name, proc in nlp.pipeline:
                if name == self.name:
                    break
                doc_sample = [proc(doc) for doc in doc_sample]
        output_layer.set_dim("nO", n_tags, force=True)  # also overrides a wrong config 'nO'
        if self.has_crf:
            self.model.get_ref("crf").set_dim("nO", n_tags, force=True)
        self.model.initialize(X=doc_sample or None)

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> Tagging:
        """Best valid BIO tag ids per doc, and the likely alternatives when `alternatives_key` is set.
        A softmax tagger's log-probabilities under the BIO constraints form the CRF both come from."""
        logits = self.emissions(docs)
        if self.has_crf:
            start, trans, end = self.crf_scores()
        else:
            logits, start, trans, end = softmax_as_crf(logits, len(self.labels))
        alternatives = None
        if self.alternatives_key is not None:
            alternatives = span_probabilities(logits, start, trans, end, min_prob=self.alternatives_min_prob)
        return Tagging(viterbi(logits, start, trans, end), alternatives)

    def emissions(self, docs: Iterable[Doc]) -> List[np.ndarray]:
        """The model's (n_tokens, n_tags) scores per doc, as numpy (empty docs skip the model:
        nothing to score). What `predict` decodes; also what taggers run in separate
        pipelines are averaged from (benchmarks/ner_mean_crf.py)."""
        docs = list(docs)
        busy = [doc for doc in docs if len(doc)]
        scores = iter(self.model.predict(busy) if busy else [])
        return [self.model.ops.to_numpy(next(scores)) if len(doc) else np.zeros((0, len(self.tags)), "f") for doc in docs]

    def crf_scores(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CRF's learned start/transition/end scores plus the BIO constraints."""
        crf, to_numpy = self.model.get_ref("crf"), self.model.ops.to_numpy
        masks = bio_constraints(len(self.labels))
        return tuple(to_numpy(crf.get_param(name)) + mask for name, mask in zip(("start", "trans", "end"), masks))

    def set_annotations(self, docs: Iterable[Doc], tagging: "Tagging | List[Ints1d]") -> None:
        """`doc.ents` from the tag ids (a `Tagging`, or the ids alone); with alternatives, the spans
        of them that are not an entity go to `doc.spans[alternatives_key]`, most probable first."""
        if not isinstance(tagging, Tagging):
            tagging = Tagging(list(tagging))
        tags, labels = self.tags, self.labels
        for d, (doc, ids) in enumerate(zip(docs, tagging.tag_ids)):
            biluo = iob_to_biluo([tags[i] for i in ids])
            doc.ents = biluo_tags_to_spans(doc, biluo)
            if tagging.alternatives is None or self.alternatives_key is None:
                continue
            chosen = {(e.start, e.end, e.label_) for e in doc.ents}
            spans = sorted(((p, s, e, labels[k]) for s, e, k, p in tagging.alternatives[d]
                            if (s, e, labels[k]) not in chosen), key=lambda x: (-x[0], x[1], x[2]))
            group = SpanGroup(doc, name=self.alternatives_key,
                              spans=[Span(doc, s, e, label=label) for _, s, e, label in spans])
            group.attrs["scores"] = [p for p, _, _, _ in spans]
            doc.spans[self.alternatives_key] = group

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
        if self.model.attrs.get("feature_dropout") is not None:  # see spacy_el.BiLSTMTagger.v2
            set_dropout_rate(self.model.get_ref("features"), self.model.attrs["feature_dropout"])
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]):
        """Loss against the gold BIO tags: the CRF's negative log-likelihood (which also adds
        the gradients of the transition scores to the CRF layer), or the per-token
        cross-entropy. `None` (missing or unknown-label) tokens constrain nothing."""
        validate_examples(examples, "BiLSTMEntityRecognizer.get_loss")
        examples = list(examples)
        truths = [self._gold_bio(eg) for eg in examples]
        unannotated = [self._unannotated(eg) for eg in examples]
        if self.has_crf:
            return self._crf_loss(truths, scores, [self._teacher(eg) for eg in examples], unannotated)
        # Per-token softmax: an O that may be an unannotated label's entity teaches nothing.
        truths = [[None if tag == "O" and extra else tag for tag in truth] for truth, extra in zip(truths, unannotated)]
        loss_func = SequenceCategoricalCrossentropy(names=self.tags, normalize=False)
        d_scores, loss = loss_func(scores, truths)
        if self.model.ops.xp.isnan(loss):
            raise ValueError("bilstm_ner: loss is NaN; lower [training.optimizer] learn_rate")
        return float(loss), d_scores

    def _crf_loss(self, truths: List[List[Optional[str]]], scores: List[Floats2d], teachers: List,
                  unannotated: List[List[str]]) -> Tuple:
        temperatures = {t[2] for t in teachers if t is not None}
        if len(temperatures) > 1:
            raise ValueError(f"bilstm_ner: the training docs carry teacher targets at several temperatures "
                             f"{sorted(temperatures)}; write them all with one `spacy-el teacher-targets --temperature`")
        ops, index = self.model.ops, {tag: i for i, tag in enumerate(self.tags)}
        allowed = []
        for truth, extra in zip(truths, unannotated):
            mask = np.ones((len(truth), len(index)), dtype=bool)
            also_o = [index[f"{prefix}-{label}"] for label in extra for prefix in ("B", "I")]
            for t, tag in enumerate(truth):
                if tag is not None:
                    mask[t] = False
                    mask[t, index[tag]] = True
                    if tag == "O":
                        mask[t, also_o] = True
            allowed.append(mask)
        start, trans, end = self.crf_scores()
        loss, d_scores, d_start, d_trans, d_end = crf_loss(
            [ops.to_numpy(x) for x in scores], allowed, start, trans, end,
            [t[:2] if t is not None else None for t in teachers], self.teacher_weight,
            temperatures.pop() if temperatures else 1.0)
        if not np.isfinite(loss):
            raise ValueError("bilstm_ner: loss is not finite; lower [training.optimizer] learn_rate")
        crf = self.model.get_ref("crf")
        for name, grad in (("start", d_start), ("trans", d_trans), ("end", d_end)):
            crf.inc_grad(name, ops.asarray(grad, dtype="f"))
        return loss, [ops.asarray2f(d) for d in d_scores]

    def _unannotated(self, example: Example) -> List[str]:
        """The labels of this tagger that the reference doc declares unannotated
        (`convert-ner --unannotated-label`): where its gold says O, they may still be."""
        labels = example.reference.user_data.get(UNANNOTATED_KEY) or []
        return [label for label in labels if label in self.labels]

    def _teacher(self, example: Example) -> Optional[Tuple[np.ndarray, np.ndarray, float]]:
        """The reference doc's teacher targets (marginals, transition counts, temperature), if it
        has them and its tokens are the predicted doc's (targets are per token: no alignment)."""
        targets = example.reference.user_data.get(TEACHER_KEY)
        if targets is None or not _same_tokens(example):
            return None
        if list(targets["tags"]) != self.tags:
            raise ValueError(f"bilstm_ner: the training corpus's teacher targets are for the tags "
                             f"{list(targets['tags'])}, this tagger has {self.tags}; write them with a "
                             "teacher of the same labels (`spacy-el teacher-targets`)")
        return (np.asarray(targets["marginals"], dtype="f"), np.asarray(targets["transitions"], dtype="f"),
                float(targets.get("temperature", 1.0)))

    def _gold_bio(self, example: Example) -> List[Optional[str]]:
        """Gold tags aligned to the predicted tokens, BILUO → BIO; missing ('-'/None) and labels
        the model does not know become None so the loss ignores them."""
        known = set(self.labels)
        y = example.reference
        if _same_tokens(example):
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


def _same_tokens(example: Example) -> bool:
    x, y = example.predicted, example.reference
    return len(x) == len(y) and bool((x.to_array(ORTH) == y.to_array(ORTH)).all())


def softmax_as_crf(logits: List[np.ndarray], n_labels: int) -> Tuple[List[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """A softmax tagger's scores as a CRF: per-token log-probabilities, with only the BIO
    constraints as start/transition/end scores. Its best path is the most probable *valid* BIO
    sequence, and its span probabilities are what `alternatives_key` reports."""
    return ([log_softmax(x) if len(x) else x for x in logits], *bio_constraints(n_labels))
