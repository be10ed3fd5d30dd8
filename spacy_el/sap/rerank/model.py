"""A cross-encoder reranker over the linker's top-k: it reads a mention in its context together
with a candidate concept's names and gives the pair one score (a BERT-like model with a one-logit
head, `AutoModelForSequenceClassification`), which a name-only bi-encoder cannot: whether "SJS"
near "myotonia" is Schwartz-Jampel or Stevens-Johnson syndrome.

The order it gives is `bi-encoder cosine + weight × cross-encoder score`; `weight` is tuned on dev
by training (`spacy_el.sap.rerank.train`) over a grid that includes 0, so the combination never ranks
dev worse than the bi-encoder alone. Both scores stay on each `Candidate` (`score`: the cosine,
`rerank_score`: the cross-encoder's).

Two input layouts (`RerankerSettings.listwise`): one (context, candidate) pair per input, scored
by the model's sequence head; or a mention's candidates read together, `[CLS] context [SEP] c1 [SEP]
c2 … [SEP]`, each scored by the mean of a token head over its own tokens. The second reads the context
once for all k candidates (about k× fewer tokens on CPU) and lets candidates be compared.

Two runtimes with one interface (`score_groups`, `score`, `settings`, `save`): `CrossEncoderReranker` (torch,
trainable) and `OnnxReranker` (ONNX Runtime, optionally int8, for CPU serving; `export_onnx`).
A directory holds `reranker.json` (settings, runtime) and an HF model + tokenizer, or `model.onnx`
+ `tokenizer.json`. `spacy_el.RerankerFromPath.v1` is the loader `sap_linker.initialize` takes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from spacy.util import registry

from spacy_el.io import InputError, atomic_dir, atomic_write
from spacy_el.kb.index import Candidate
from spacy_el.models import after_fork_in_child, keep_inherited, resolve_model, runtime_threads
from spacy_el.sap.rerank.context import DEFAULT_MAX_NAMES, DEFAULT_WINDOW, candidate_text, mention_in_context

SETTINGS_FILE = "reranker.json"
#: Model inputs per call. On CPU small batches run fastest (64-token inputs, 2 layers, ONNX int8:
#: 0.66 ms an input in batches of 16, 0.74 in 64, 0.89 in 256), the activations staying in cache.
BATCH_SIZE = 16
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class RerankerSettings:
    """What shapes a reranker's inputs and how its score is combined with the cosine."""

    #: Tokens of a (context, candidate) pair; longer pairs lose context words first.
    max_length: int = 96
    #: Characters of document text each side of the mention (`mention_in_context`).
    window: int = DEFAULT_WINDOW
    #: Names shown per candidate (`candidate_text`).
    max_names: int = DEFAULT_MAX_NAMES
    #: Order key: cosine + weight × cross-encoder score (tuned on dev; 0 = the bi-encoder's order).
    weight: float = 1.0
    #: Candidates the reranker was trained to reorder (the linker's default `rerank_top_k`).
    top_k: int = 5
    layers: int | None = None
    base: str = ""
    #: One input per mention holding all its candidates (a token head) instead of one per pair.
    listwise: bool = False
    #: Tokens kept of each candidate text in a listwise input.
    candidate_tokens: int = 16
    #: The largest max − min of its scores within one dev mention's top-k (set by training): with
    #: `weight`, how far a candidate's reranked key can move, so the linker can tell which mentions'
    #: first candidate the reranker could overturn (`worth_reranking`). None: not known (rerank all).
    score_spread: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_length", "candidate_tokens", "top_k", "max_names"):
            if getattr(self, name) < 1:
                raise InputError(f"reranker setting {name}={getattr(self, name)}: use an integer >= 1")


@runtime_checkable
class Reranker(Protocol):
    """Scores each context's candidate texts; higher is a better match."""

    settings: RerankerSettings

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]: ...

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


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
        for idx in _length_batches([len(e[0]) for e in encoded], batch_size):
            width = max(len(encoded[i][0]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                n = len(encoded[i][0])
                ids[row, :n], types[row, :n], mask[row, :n] = encoded[i][0], encoded[i][1], 1
            yield idx, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, [encoded[i][2] for i in idx]


def _pairs(contexts: Sequence[str], groups: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """The (context, candidate) pairs of the groups, flattened in order (`_split` undoes it)."""
    return ([ctx for ctx, group in zip(contexts, groups) for _ in group],
            [c for group in groups for c in group])


def _split(flat: np.ndarray, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
    bounds = np.cumsum([len(g) for g in groups])[:-1]
    return list(np.split(flat, bounds)) if len(groups) else []


def _list_scores(lists: ListwiseInputs, contexts: Sequence[str], groups: Sequence[Sequence[str]], batch_size: int,
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


def _paired_scores(contexts: Sequence[str], groups: Sequence[Sequence[str]], batch_size: int,
                   score_pairs: Callable[[list[str], list[str]], np.ndarray]) -> list[np.ndarray]:
    """Each group's candidate scores from one (context, candidate) input each, batched by length:
    `score_pairs` (contexts, candidates → one score each, whatever the runtime) runs per batch."""
    ctx, cand = _pairs(contexts, groups)
    flat = np.zeros(len(ctx), dtype=np.float32)
    for idx in _length_batches([len(ctx[i]) + len(cand[i]) for i in range(len(ctx))], batch_size):
        flat[idx] = score_pairs([ctx[i] for i in idx], [cand[i] for i in idx])
    return _split(flat, groups)


def _length_batches(pairs_len: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (less padding)."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive integer")
    order = sorted(range(len(pairs_len)), key=pairs_len.__getitem__)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _write_settings(path: Path, settings: RerankerSettings, runtime: str) -> None:
    with atomic_write(path / SETTINGS_FILE) as f:
        json.dump(dataclasses.asdict(settings) | {"runtime": runtime}, f, indent=2)


def _read_settings(path: Path) -> tuple[RerankerSettings, str]:
    file = path / SETTINGS_FILE
    if not file.exists():
        raise InputError(f"{path}: not a reranker directory (no {SETTINGS_FILE}); train one with "
                         "`spacy-el train-reranker` or give the directory it wrote (OUTPUT_DIR/reranker)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{file}: not valid JSON ({err.msg}, line {err.lineno}); save the reranker again") from None
    names = {f.name for f in dataclasses.fields(RerankerSettings)}
    return RerankerSettings(**{k: v for k, v in data.items() if k in names}), data.get("runtime", "torch")


class CrossEncoderReranker:
    """The torch reranker (trainable; `model`, `device`, `save` as the training loop expects)."""

    runtime = "torch"

    def __init__(self, model, tokenizer, settings: RerankerSettings, num_threads: int | None = None) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = torch.device("cpu")
        self.num_threads = num_threads
        self._list_inputs: ListwiseInputs | None = None

    @staticmethod
    def _model_class(settings: RerankerSettings):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        return AutoModelForTokenClassification if settings.listwise else AutoModelForSequenceClassification

    @classmethod
    def from_base(cls, base: str | Path, *, layers: int | None = None, settings: RerankerSettings | None = None,
                  seed: int = 0, num_threads: int | None = None) -> "CrossEncoderReranker":
        """A new reranker from an HF encoder (e.g. the packaged MiniLM), keeping its first
        `layers` transformer layers (all when None) and a fresh one-logit head (seeded): on the
        sequence for pairs, on each token for listwise inputs."""
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        resolved = resolve_model(base)
        try:
            config = AutoConfig.from_pretrained(resolved, num_labels=1)
            if layers is not None:
                if not 1 <= layers <= config.num_hidden_layers:
                    raise InputError(f"layers={layers}: {base} has {config.num_hidden_layers} transformer layers; "
                                     f"use 1 to {config.num_hidden_layers}")
                config.num_hidden_layers = layers
            torch.manual_seed(seed)
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
            try:
                model = cls._model_class(settings or RerankerSettings()).from_pretrained(resolved, config=config)
            finally:
                hf_logging.set_verbosity(verbosity)
            tokenizer = AutoTokenizer.from_pretrained(resolved)
        except (OSError, ValueError) as err:
            raise InputError(f"reranker base {base!r}: cannot load a Hugging Face model from it ({err}); "
                             "pass a local model directory such as the packaged MiniLM") from None
        settings = dataclasses.replace(settings or RerankerSettings(), layers=config.num_hidden_layers, base=str(base))
        return cls(model, tokenizer, settings, num_threads)

    @classmethod
    def load(cls, path: str | Path, *, num_threads: int | None = None) -> "CrossEncoderReranker":
        from transformers import AutoTokenizer

        path = Path(path)
        settings, runtime = _read_settings(path)
        if runtime != cls.runtime:
            raise InputError(f"{path} is a {runtime} reranker; load it with load_reranker")
        model = cls._model_class(settings).from_pretrained(path)
        return cls(model, AutoTokenizer.from_pretrained(path), settings, num_threads)

    def save(self, path: str | Path) -> None:
        """An HF directory (model + tokenizer) plus `reranker.json`, atomically."""
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            _write_settings(Path(tmp), self.settings, self.runtime)

    def _threads(self):
        from spacy_el.sap.encoder import torch_threads

        return torch_threads(self.num_threads)

    def tokenize(self, contexts: Sequence[str], candidates: Sequence[str]):
        return self.tokenizer(list(contexts), list(candidates), truncation="longest_first",
                              max_length=self.settings.max_length, padding=True, return_tensors="pt")

    @property
    def _lists(self) -> ListwiseInputs:
        if self._list_inputs is None:
            self._list_inputs = ListwiseInputs(self.tokenizer.backend_tokenizer, self.settings,
                                               self.tokenizer.pad_token_id)
        return self._list_inputs

    def group_logits(self, contexts: Sequence[str], groups: Sequence[Sequence[str]], model=None) -> list:
        """One score tensor per context over its candidates, with gradients (training); `model`
        lets the loop pass a DDP wrapper."""
        import torch

        model = model or self.model
        if not self.settings.listwise:
            flat = model(**self.tokenize(*_pairs(contexts, groups))).logits[:, 0]
            return list(torch.split(flat, [len(g) for g in groups]))
        out: list = [None] * len(contexts)
        for idx, feeds, spans in self._lists.batches(contexts, groups, len(contexts) or 1):
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            tokens = model(**inputs).logits[..., 0]
            for row, i in enumerate(idx):
                out[i] = torch.stack([tokens[row, a:b].mean() for a, b in spans[row]])
        return out

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with self._threads(), torch.inference_mode():
                if not self.settings.listwise:
                    return _paired_scores(contexts, groups, batch_size, lambda ctx, cand: self.model(
                        **self.tokenize(ctx, cand)).logits[:, 0].float().numpy())
                return _list_scores(self._lists, contexts, groups, batch_size, lambda feeds: self.model(
                    **{k: torch.from_numpy(v) for k, v in feeds.items()}).logits[..., 0].float().numpy())
        finally:
            self.model.train(was_training)

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One score per (context, candidate) pair."""
        return _pair_scores(self, contexts, candidates, batch_size)


def _pair_scores(reranker: Reranker, contexts: Sequence[str], candidates: Sequence[str], batch_size: int) -> np.ndarray:
    if len(contexts) != len(candidates):
        raise InputError(f"{len(contexts)} contexts but {len(candidates)} candidates: score takes pairs")
    groups = [[c] for c in candidates]
    scores = reranker.score_groups(contexts, groups, batch_size)
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, dtype=np.float32)


#: Every OnnxReranker alive, so a forked child (`nlp.pipe(n_process=…)`) gets fresh sessions.
_LIVE: "weakref.WeakSet[OnnxReranker]" = weakref.WeakSet()


@after_fork_in_child
def _sessions_after_fork() -> None:
    for reranker in list(_LIVE):
        reranker._session_after_fork()


class OnnxReranker:
    """The reranker served by ONNX Runtime (fp32 or int8 weights), without torch or transformers."""

    runtime = "onnx"

    def __init__(self, directory: Path, settings: RerankerSettings, num_threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.settings = settings
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self._lists = ListwiseInputs(self.tokenizer, settings, (self.tokenizer.padding or {}).get("pad_id", 0)) \
            if settings.listwise else None
        self._num_threads = num_threads
        self.session = self._session(num_threads)
        self._inputs = {i.name for i in self.session.get_inputs()}
        _LIVE.add(self)

    def _session(self, num_threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime_threads(num_threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.directory / MODEL_FILE), options, providers=["CPUExecutionProvider"])

    def _session_after_fork(self) -> None:
        """In a forked child: the inherited session's threads are gone; a one-thread session is
        built on first use (not inside the fork handler, where the runtime's state may be locked).
        The inherited one is kept, never destroyed (`spacy_el.models.keep_inherited`): dropping it
        here hung every child of a process that held an ONNX reranker."""
        keep_inherited(self.session)
        self.session = None

    @classmethod
    def load(cls, path: str | Path, *, num_threads: int | None = None) -> "OnnxReranker":
        path = Path(path)
        settings, runtime = _read_settings(path)
        if runtime != cls.runtime:
            raise InputError(f"{path} is a {runtime} reranker; load it with load_reranker")
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (path / name).exists():
                raise InputError(f"{path}: {name} is missing; export the reranker again (`spacy-el export-onnx "
                                 "--reranker`)")
        return cls(path, settings, num_threads)

    def save(self, path: str | Path) -> None:
        with atomic_dir(path) as tmp:
            for name in (MODEL_FILE, TOKENIZER_FILE):
                shutil.copyfile(self.directory / name, Path(tmp) / name)
            _write_settings(Path(tmp), self.settings, self.runtime)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is None:
            self.session = self._session(1)
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]

    def score_groups(self, contexts: Sequence[str], groups: Sequence[Sequence[str]],
                     batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
        if self._lists is not None:
            return _list_scores(self._lists, contexts, groups, batch_size, lambda feeds: self._run(feeds)[..., 0])
        return _paired_scores(contexts, groups, batch_size, self._score_pairs)

    def _score_pairs(self, contexts: list[str], candidates: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(zip(contexts, candidates)))
        return self._run({"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                          "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                          "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)})[:, 0]

    def score(self, contexts: Sequence[str], candidates: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """One score per (context, candidate) pair."""
        return _pair_scores(self, contexts, candidates, batch_size)


def export_onnx(reranker: CrossEncoderReranker, output: str | Path, *, quantize: bool = True,
                opset: int = 17) -> OnnxReranker:
    """Export a torch reranker to `output` (atomically); `quantize`: int8 weights (ONNX Runtime's
    dynamic quantization, per channel), the CPU serving form."""
    import torch

    if not isinstance(reranker, CrossEncoderReranker):
        raise InputError("export needs a torch reranker (a `spacy-el train-reranker` directory)")
    backend = getattr(reranker.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError("the reranker's tokenizer has no fast (Rust) version, which the ONNX runtime needs")
    batch = reranker.tokenize(["a b [c] d", "e"], ["f", "g h"])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch]
    with atomic_dir(output) as tmp, tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / MODEL_FILE
        model = reranker.model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(batch[k] for k in names), str(raw), input_names=names,
                              output_names=["logits"],
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names}
                              | {"logits": {0: "batch", 1: "tokens"} if reranker.settings.listwise else {0: "batch"}},
                              dynamo=False, opset_version=opset)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(str(raw), str(Path(tmp) / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(level)
        else:
            shutil.copyfile(raw, Path(tmp) / MODEL_FILE)
        tokenizer = type(backend).from_str(backend.to_str())
        tokenizer.enable_truncation(max_length=reranker.settings.max_length, strategy="longest_first")
        tokenizer.enable_padding(pad_id=reranker.tokenizer.pad_token_id, pad_token=reranker.tokenizer.pad_token)
        tokenizer.save(str(Path(tmp) / TOKENIZER_FILE))
        _write_settings(Path(tmp), reranker.settings, OnnxReranker.runtime)
    return OnnxReranker.load(output, num_threads=reranker.num_threads)


def load_reranker(path: str | Path, *, num_threads: int | None = None) -> Reranker:
    """The torch or ONNX reranker saved in `path` (by its `reranker.json`)."""
    path = Path(path)
    _, runtime = _read_settings(path)
    if runtime == OnnxReranker.runtime:
        return OnnxReranker.load(path, num_threads=num_threads)
    return CrossEncoderReranker.load(path, num_threads=num_threads)


@registry.misc("spacy_el.RerankerFromPath.v1")
def reranker_from_path(path: str, num_threads: int | None = None) -> Callable[[], Reranker]:
    """A loader for `[initialize.components.sap_linker.reranker_loader]`: the reranker at `path`."""

    def load() -> Reranker:
        return load_reranker(path, num_threads=num_threads)

    return load


def rerank(reranker: Reranker, contexts: Sequence[str], candidates: Sequence[Sequence[Candidate]],
           names: Mapping[str, Sequence[str]], *, top_k: int | None = None, weight: float | None = None,
           batch_size: int = BATCH_SIZE, bonus: Mapping[str, float] | None = None) -> list[list[Candidate]]:
    """Each mention's first `top_k` candidates (all when None) scored by the reranker and
    reordered by cosine + weight × score (the settings' weight unless given), plus the index's
    corpus-prior `bonus` of the concept when given (`ConceptIndex.concept_bonus`), so the prior
    keeps counting after reranking; candidates past `top_k` keep their order after them.
    `names`: concept id → its names (`concept_names`)."""
    bonus = bonus or {}
    k = reranker.settings.top_k if top_k is None else top_k
    w = reranker.settings.weight if weight is None else weight
    groups = [[candidate_text(c.name, names.get(c.concept_id, ()), reranker.settings.max_names) for c in cands[:k]]
              for cands in candidates]
    scores = reranker.score_groups(contexts, groups, batch_size=batch_size) if groups else []
    out: list[list[Candidate]] = []
    for cands, group_scores in zip(candidates, scores):
        head = [c._replace(rerank_score=float(s)) for c, s in zip(cands[:k], group_scores)]
        head.sort(key=lambda c: -(c.score + bonus.get(c.concept_id, 0.0) + w * c.rerank_score))
        out.append(head + list(cands[k:]))
    return out


#: The reach of a reranker is weight × this × its dev score spread: room for mentions that spread
#: their scores wider than any on dev did and for int8 rounding (the NCBI-disease alias reranker's
#: widest spread: 9.80 on dev, 10.07 on its train lists).
SPREAD_HEADROOM = 1.5


def reach(settings: RerankerSettings) -> float:
    """How much the reranker can move a candidate's key relative to another's: weight × its score
    spread (with `SPREAD_HEADROOM`); infinite when the spread is not known."""
    if settings.score_spread is None:
        return float("inf")
    return settings.weight * settings.score_spread * SPREAD_HEADROOM


def worth_reranking(candidates: Sequence[Candidate], margin: float | None, settings: RerankerSettings,
                    top_k: int, bonus: Mapping[str, float] | None = None) -> bool:
    """Whether a mention's candidates go to the reranker. With a `margin`: when the best cosine
    leads the second by less (near-ties only, a speed setting that gives up some accuracy). Without:
    when the reranker could overturn the first candidate, i.e. its lead in the order `rerank` sorts
    by (cosine + prior bonus) over the best rival among the first `top_k` is below the reranker's
    `reach`; for the others reranking would leave the same first candidate, so skipping them
    changes no link (only the order behind it, and those candidates carry no `rerank_score`)."""
    if len(candidates) < 2:
        return False
    if margin is not None:
        return candidates[0].score - candidates[1].score < margin
    bonus = bonus or {}
    keys = [c.score + bonus.get(c.concept_id, 0.0) for c in candidates[:max(top_k, 2)]]
    return keys[0] - max(keys[1:]) < reach(settings)


def rerank_spans(reranker: Reranker, spans: Sequence[Any], texts: Sequence[str], candidates: Sequence[list],
                 names: Mapping[str, Sequence[str]], *, top_k: int, margin: float | None = None,
                 batch_size: int = BATCH_SIZE, bonus: Mapping[str, float] | None = None) -> list[list[Candidate]]:
    """`rerank` for entities of spaCy docs: each span is read in a window of its doc's text, with
    `texts[i]` (what the linker searched) shown when it differs from the span's own text. Spans
    not `worth_reranking` (by `margin`, or out of the reranker's reach) keep their order."""
    todo = [i for i, c in enumerate(candidates) if worth_reranking(c, margin, reranker.settings, top_k, bonus)]
    out = [list(c) for c in candidates]
    if not todo:
        return out
    window = reranker.settings.window
    doc_texts: dict[int, str] = {}  # `Doc.text` joins every token anew on each call: once per doc
    contexts = []
    for i in todo:
        doc = spans[i].doc
        if id(doc) not in doc_texts:
            doc_texts[id(doc)] = doc.text
        contexts.append(mention_in_context(doc_texts[id(doc)], spans[i].start_char, spans[i].end_char,
                                           query=texts[i], window=window))
    for i, ranked in zip(todo, rerank(reranker, contexts, [candidates[i] for i in todo], names, top_k=top_k,
                                      batch_size=batch_size, bonus=bonus)):
        out[i] = ranked
    return out


__all__: list[Any] = ["RerankerSettings", "Reranker", "CrossEncoderReranker", "OnnxReranker", "export_onnx",
                      "load_reranker", "reranker_from_path", "rerank", "rerank_spans", "worth_reranking", "reach"]
