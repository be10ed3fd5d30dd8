"""What the tagger reads for each token, as thinc layers `List[Doc] → List[Floats2d]`:
hashed subword features and static vectors (spaCy's `MultiHashEmbed`), a character CNN, flags
for KB names found by the `kb_gazetteer` component, and transformer features from a
spacy-transformers `TransformerListener`. `spacy_el.TokenFeatures.v1` concatenates the ones
a config turns on."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import numpy as np
from spacy.ml.models.tok2vec import MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Linear, Model, concatenate, chain, with_array
from thinc.types import Floats2d, Ints2d

from spacy_el.ner.folding import fold_for_prediction
from spacy_el.ner.modules import module_state, torch_module_node
from spacy_el.ner.numpy_forward import char_cnn


@registry.architectures("spacy_el.TokenFeatures.v1")
def build_token_features(
    embed_width: int,
    attrs: List[Union[str, int]],
    rows: List[int],
    include_static_vectors: bool,
    char_width: int,
    char_length: int,
    gazetteers: List[str],
    transformer: Optional[Model[List[Doc], List[Floats2d]]],
    transformer_width: int,
    word_dropout: float = 0.0,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token input vectors for the BiLSTM: the concatenation of

    - `MultiHashEmbed` over `attrs` (one hash table of `rows[i]` rows per attribute) plus, with
      `include_static_vectors`, the vocab's word vectors, mixed to `embed_width`; in training,
      with `word_dropout > 0`, this whole word vector is zeroed for that fraction of the tokens
      (`WordDropout`);
    - with `char_width > 0`, a character CNN (`char_width` filters over the first and last
      `char_length // 2` UTF-8 bytes of each token), as in Ma & Hovy (2016);
    - for each spans key in `gazetteers`, two flags: the token starts / continues a KB name that
      the `kb_gazetteer` component stored under that key;
    - with a `transformer` sublayer (e.g. `spacy-transformers.TransformerListener.v1`), its
      token vectors projected to `transformer_width`.
    The output width is the sum of the parts; `attrs` and `rows` must have the same length.
    """
    if len(attrs) != len(rows):
        raise ValueError(
            f"spacy_el.TokenFeatures.v1: settings 'attrs' ({len(attrs)} items) and 'rows' "
            f"({len(rows)} items) must have the same length: one hash-table size per attribute"
        )
    for name, value in (("embed_width", embed_width), ("char_width", char_width), ("char_length", char_length)):
        if value < 0 or (name == "embed_width" and value < 1):
            raise ValueError(f"spacy_el.TokenFeatures.v1: setting '{name}' must be >= {int(name == 'embed_width')}, got {value}")
    if char_width and char_length < 2:
        raise ValueError(f"spacy_el.TokenFeatures.v1: setting 'char_length' must be >= 2 with a char CNN, got {char_length}")
    if not 0.0 <= word_dropout < 1.0:
        raise ValueError(f"spacy_el.TokenFeatures.v1: setting 'word_dropout' must be in [0, 1), got {word_dropout}")
    words: Model = fold_for_prediction(
        MultiHashEmbed(width=embed_width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors))
    if word_dropout:
        words = chain(words, WordDropout(word_dropout))
    parts: List[Model] = [words]
    width = embed_width
    if char_width:
        parts.append(CharCNN(char_width, char_length))
        width += char_width
    if gazetteers:
        parts.append(SpanFlags(gazetteers))
        width += 2 * len(gazetteers)
    if transformer is not None:
        if transformer_width < 1:
            raise ValueError("spacy_el.TokenFeatures.v1: setting 'transformer_width' must be >= 1 with a transformer")
        parts.append(chain(transformer, with_array(Linear(nO=transformer_width))))
        width += transformer_width
    model = concatenate(*parts) if len(parts) > 1 else parts[0]
    model.attrs["width"] = width
    model.attrs["include_static_vectors"] = include_static_vectors
    return model


def WordDropout(rate: float) -> Model[List[Floats2d], List[Floats2d]]:
    """In training, zero the whole vector of each token with probability `rate` (the rest scaled
    by 1 / (1 - rate)): word dropout, the counterpart of Lample et al.'s random replacement of words
    by UNK. The word tables (static vectors, hashed NORM rows) let a wide tagger memorise the
    train set's entities within a few epochs; without its word vector a token is tagged from its
    characters, gazetteer flags and context. Unaffected by `[training] dropout` (its rate is
    stored as `word_dropout`, not `dropout_rate`)."""

    def forward(model: Model, Xs: List[Floats2d], is_train: bool):
        rate = model.attrs["word_dropout"]
        if not is_train or not rate:
            return Xs, lambda dYs: dYs
        masks = [model.ops.asarray2f((np.random.random((len(X), 1)) >= rate) / (1.0 - rate)) for X in Xs]
        return [X * m for X, m in zip(Xs, masks)], lambda dYs: [dY * m for dY, m in zip(dYs, masks)]

    return Model("word_dropout", forward, attrs={"word_dropout": rate})


def _char_cnn_class() -> type:
    """`_CharCNNModule`, defined on first use so that importing this module needs no torch."""
    cls = globals().get("_CharCNNModule")
    if cls is not None:
        return cls
    import torch

    class _CharCNNModule(torch.nn.Module):
        """Byte embeddings → one convolution → max over the token's bytes (padding masked)."""

        def __init__(self, width: int, byte_width: int = 32, window: int = 3) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(257, byte_width, padding_idx=0)  # byte b is id b + 1
            self.conv = torch.nn.Conv1d(byte_width, width, window, padding=window // 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            if ids.shape[0] == 0:
                return torch.zeros((0, self.conv.out_channels), dtype=torch.float32)
            h = self.conv(self.embed(ids).transpose(1, 2))  # (tokens, width, bytes)
            h = h.masked_fill((ids == 0)[:, None, :], -1e4)
            return torch.tanh(h.max(dim=2).values)

    globals()["_CharCNNModule"] = _CharCNNModule  # where pickle finds it
    return _CharCNNModule


def __getattr__(name: str):
    if name == "_CharCNNModule":
        return _char_cnn_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def byte_ids(text: str, length: int) -> np.ndarray:
    """(length,) UTF-8 byte ids + 1 of one token (0 pads); a longer token keeps its first
    `length // 2` and last `length - length // 2` bytes, where prefixes and suffixes live."""
    out = np.zeros(length, dtype="int64")
    data = text.encode("utf8")
    if len(data) > length:
        data = data[: length // 2] + data[len(data) - (length - length // 2):]
    out[: len(data)] = np.frombuffer(data, dtype=np.uint8) + 1
    return out


def CharCNN(width: int, length: int, cache_size: int = 200_000) -> Model[List[Doc], List[Floats2d]]:
    """A character CNN per token (`width` filters), as the BiLSTM-CNN-CRF of Ma & Hovy.

    A token's byte ids are kept by its ORTH id (up to `cache_size` word types, then the
    cache starts over): a text repeats its words, and encoding each token afresh in Python
    cost as much as the CNN itself. Training runs the PyTorch module; prediction on the CPU runs
    its weights in numpy (`spacy_el.ner.numpy_forward.char_cnn`), with or without torch."""
    rows: dict = {}

    def doc_ids(doc: Doc) -> Ints2d:
        if len(rows) > cache_size:
            rows.clear()
        strings = doc.vocab.strings
        out = []
        for orth in doc.to_array("ORTH").tolist():
            row = rows.get(orth)
            if row is None:
                row = rows[orth] = byte_ids(strings[orth], length)
            out.append(row)
        return np.stack(out) if out else np.zeros((0, length), dtype="int64")

    def forward(model: Model, docs: List[Doc], is_train: bool):
        return [doc_ids(doc) for doc in docs], lambda d: []

    def convert_inputs(model: Model, ids: Ints2d, is_train: bool):
        import torch

        tensor = torch.as_tensor(model.ops.to_numpy(ids), dtype=torch.int64, device=model.shims[0].device)
        return ArgsKwargs(args=(tensor,), kwargs={}), lambda d: model.ops.alloc2i(*ids.shape)

    def predict(model: Model, ids: Ints2d) -> Floats2d:
        return model.ops.asarray2f(char_cnn(module_state(model), model.ops.to_numpy(ids)))

    extract: Model = Model("byte_ids", forward)
    cnn = torch_module_node(lambda: _char_cnn_class()(width), predict, convert_inputs=convert_inputs,
                            dims={"nO": width})
    return chain(extract, with_array(cnn))


def SpanFlags(keys: Sequence[str]) -> Model[List[Doc], List[Floats2d]]:
    """Two columns per spans key: 1 where a span in `doc.spans[key]` starts, 1 inside one
    (after its first token). The spans come from a component earlier in the pipeline, so a
    doc without the key means the pipeline is assembled wrongly: that is an error, not zeros."""
    keys = list(keys)

    def forward(model: Model, docs: List[Doc], is_train: bool):
        out = []
        for doc in docs:
            flags = np.zeros((len(doc), 2 * len(keys)), dtype="f")
            for k, key in enumerate(keys):
                if key not in doc.spans:
                    raise ValueError(
                        f"bilstm_ner: the model reads KB-name flags from doc.spans[{key!r}], which this doc "
                        "lacks; put the kb_gazetteer component (spans_key "
                        f"{key!r}) before bilstm_ner, and list it in [training] annotating_components"
                    )
                for span in doc.spans[key]:
                    flags[span.start, 2 * k] = 1.0
                    flags[span.start + 1 : span.end, 2 * k + 1] = 1.0
            out.append(model.ops.asarray2f(flags))
        return out, lambda d: []

    return Model("span_flags", forward, dims={"nO": 2 * len(keys)}, attrs={"keys": keys})


@registry.architectures("spacy_el.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict,
    transformer_config: dict,
    mixed_precision: bool,
    grad_scaler_config: dict,
) -> Model:
    """spacy-transformers' `TransformerModel.v3` with the model `name` resolved as everywhere in
    spacy-el: a local Hugging Face directory, the short name of the packaged MiniLM
    ("all-MiniLM-L6-v2", works offline), or a hub name. Needs the `[trf]` extra."""
    try:
        from spacy_transformers.layers import TransformerModel
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("spacy_el.TransformerModel.v1 needs spacy-transformers: pip install 'spacy-el[trf]'") from None
    from spacy_el.models import resolve_model

    return TransformerModel(resolve_model(name), get_spans, tokenizer_config, transformer_config,
                            mixed_precision, grad_scaler_config)


@registry.callbacks("spacy_el.initialize_frozen.v1")
def make_initialize_frozen(components: List[str]) -> Callable:
    """An `[initialize] before_init` callback that initializes the named components although
    `[training] frozen_components` lists them. spaCy skips frozen components at initialization
    because it expects them sourced from a trained pipeline; a pretrained transformer used as a
    frozen feature extractor needs only its own initialize (which loads the Hugging Face weights
    and tells its listeners their width)."""

    def before_init(nlp):
        for name in components:
            if name not in nlp.component_names:
                raise ValueError(f"spacy_el.initialize_frozen.v1: no component {name!r} in the pipeline "
                                 f"({', '.join(nlp.component_names)}); fix [initialize.before_init] components")
            proc = nlp.get_pipe(name)
            proc.initialize(lambda: [], nlp=nlp)
            if hasattr(proc, "find_listeners"):  # disabled while frozen, so it cannot find them itself
                for _, other in nlp.components:
                    proc.find_listeners(other)
        return nlp

    return before_init
