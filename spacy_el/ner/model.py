"""The BiLSTM tagger architectures: token features → bidirectional LSTM → per-token tag scores,
optionally followed by a linear-chain CRF's learned transition scores. Built from spaCy/thinc
layers, not from scratch.

`spacy_el.BiLSTMTagger.v1` (hashed subword features + static vectors, softmax per token) is kept
as released; `.v2` takes any token-feature sublayer (`spacy_el.TokenFeatures.v1`: characters, KB
gazetteer, transformer features) and a `crf` switch."""

from typing import List, Optional, Sequence, Tuple, Union

from spacy.ml.models.tok2vec import MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Dropout, Linear, Model, Softmax_v2, chain, torch2xp, with_array, xp2torch, zero_init
from thinc.types import Floats2d

from spacy_el.ner.folding import fold_for_prediction
from spacy_el.ner.modules import module_state, torch_module_node
from spacy_el.ner.numpy_forward import bilstm, packing


@registry.architectures("spacy_el.BiLSTMTagger.v1")
def build_bilstm_tagger(
    embed_width: int,
    hidden_width: int,
    depth: int,
    attrs: List[Union[str, int]],
    rows: List[int],
    include_static_vectors: bool,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token tag scores for a batch of docs (one `(len(doc), nO)` array per doc).
    Settings have no defaults here (spaCy's convention): the `bilstm_ner` factory's default
    config supplies them, so a config that leaves one out fails naming it.

    embed_width: width of spaCy's `MultiHashEmbed` (NORM/PREFIX/SUFFIX/SHAPE hash tables, plus
        the vocab's static vectors projected to the same width when `include_static_vectors`).
    hidden_width: LSTM units *per direction*; the encoder outputs 2 * hidden_width per token.
    depth: number of stacked BiLSTM layers (each runs on padded, length-masked batches).
    nO: number of tags; the pipe sets it from its labels at `initialize` (leave it null).
    The rate of the Dropout layers (after the embedding and after each BiLSTM layer) is the
    `[training] dropout` setting, as for every spaCy component.
    """
    for name, value in (("embed_width", embed_width), ("hidden_width", hidden_width), ("depth", depth)):
        if value < 1:
            raise ValueError(f"spacy_el.BiLSTMTagger.v1: setting '{name}' must be >= 1, got {value}")
    if len(attrs) != len(rows):
        raise ValueError(
            f"spacy_el.BiLSTMTagger.v1: settings 'attrs' ({len(attrs)} items) and 'rows' "
            f"({len(rows)} items) must have the same length: one hash-table size per attribute"
        )
    embed = fold_for_prediction(MultiHashEmbed(
        width=embed_width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors
    ))
    layers: List[Model] = [embed, Dropout(0.0)]
    width = embed_width
    for _ in range(depth):
        layers.append(PackedBiLSTM(hidden_width, width))
        layers.append(Dropout(0.0))
        width = 2 * hidden_width
    # Logits at inference (for the log-softmax Viterbi), probabilities while training (for the
    # cross-entropy gradient): the same trick spaCy's tagger uses.
    output_layer = Softmax_v2(nO, width, init_W=zero_init, normalize_outputs=False)
    model: Model[List[Doc], List[Floats2d]] = chain(*layers, with_array(output_layer))
    model.set_ref("embed", embed)
    model.set_ref("output_layer", output_layer)
    model.attrs["include_static_vectors"] = include_static_vectors
    return model


@registry.architectures("spacy_el.BiLSTMTagger.v2")
def build_bilstm_crf_tagger(
    features: Model[List[Doc], List[Floats2d]],
    hidden_width: int,
    depth: int,
    crf: bool,
    nO: Optional[int] = None,
    feature_dropout: Optional[float] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token tag scores for a batch of docs from the token vectors of `features` (its
    `attrs["width"]` gives their width, as `spacy_el.TokenFeatures.v1` sets it).

    crf: the scores are a CRF's emissions, and the model ends in a `bio_crf` layer holding
    the learned start/transition/end scores (trained by `bilstm_ner` with the sequence-level
    loss of `spacy_el.ner.crf`); otherwise they are softmax logits trained per token and decoded
    by a BIO-constrained Viterbi (faster to train, usually less accurate).
    Dropout follows the features and each BiLSTM layer at the `[training] dropout` rate.

    feature_dropout: null (spaCy's way) lets `[training] dropout` reach every layer with a rate,
    inside the features too: the hashed embedding tables, the static vectors and their mixing
    layer. A number fixes the features' internal dropout at that rate, so `[training] dropout`
    is only the dropout before and after the BiLSTM, as in the BiLSTM-CRF papers (0.5 there)."""
    for name, value in (("hidden_width", hidden_width), ("depth", depth)):
        if value < 1:
            raise ValueError(f"spacy_el.BiLSTMTagger.v2: setting '{name}' must be >= 1, got {value}")
    if feature_dropout is not None and not 0.0 <= feature_dropout < 1.0:
        raise ValueError(f"spacy_el.BiLSTMTagger.v2: setting 'feature_dropout' must be null or in [0, 1), "
                         f"got {feature_dropout}")
    width = features.attrs.get("width")
    if not width:
        raise ValueError("spacy_el.BiLSTMTagger.v2: the 'features' sublayer must declare its output width "
                         "(attrs['width']); use spacy_el.TokenFeatures.v1")
    layers: List[Model] = [features, Dropout(0.0)]
    for _ in range(depth):
        layers.append(PackedBiLSTM(hidden_width, width))
        layers.append(Dropout(0.0))
        width = 2 * hidden_width
    if crf:
        output_layer = Linear(nO, width, init_W=zero_init)
        crf_layer = BioCRF(nO)
        model: Model = chain(*layers, with_array(output_layer), crf_layer)
        model.set_ref("crf", crf_layer)
    else:
        output_layer = Softmax_v2(nO, width, init_W=zero_init, normalize_outputs=False)
        model = chain(*layers, with_array(output_layer))
    model.set_ref("features", features)
    model.set_ref("output_layer", output_layer)
    model.attrs["include_static_vectors"] = features.attrs.get("include_static_vectors", False)
    model.attrs["feature_dropout"] = feature_dropout
    return model


def BioCRF(nO: Optional[int] = None) -> Model[List[Floats2d], List[Floats2d]]:
    """Holds a CRF's learned `start` (nO,), `trans` (nO, nO) and `end` (nO,) scores and passes
    the emissions through unchanged: the pipe reads the scores for its loss and decoder and
    adds their gradients with `inc_grad`, so the optimizer updates them like any weight."""

    def forward(model: Model, X: List[Floats2d], is_train: bool):
        return X, lambda dY: dY

    def init(model: Model, X=None, Y=None) -> None:
        n = model.get_dim("nO")
        model.set_param("start", model.ops.alloc1f(n))
        model.set_param("trans", model.ops.alloc2f(n, n))
        model.set_param("end", model.ops.alloc1f(n))

    return Model("bio_crf", forward, init=init, dims={"nO": nO}, params={"start": None, "trans": None, "end": None})


def _packed_lstm_class() -> type:
    """`_PackedLSTMModule`, defined on first use so that importing this module needs no torch."""
    cls = globals().get("_PackedLSTMModule")
    if cls is not None:
        return cls
    import torch
    from torch.nn.utils.rnn import PackedSequence

    class _PackedLSTMModule(torch.nn.Module):
        """A bidirectional LSTM run on a *packed* batch: each sequence is read only up to its own
        length, so the backward direction of a short doc never starts on padding."""

        def __init__(self, nI: int, nH: int) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(nI, nH, num_layers=1, bidirectional=True)

        def forward(self, X: torch.Tensor, order: torch.Tensor, batch_sizes: torch.Tensor,
                    restore: torch.Tensor) -> torch.Tensor:
            """X: the docs' token rows one doc after another; `order` puts them in packed order,
            `restore` puts the outputs back (see `packing`)."""
            Y, _ = self.lstm(PackedSequence(X[order], batch_sizes))
            return Y.data[restore]

    globals()["_PackedLSTMModule"] = _PackedLSTMModule  # where pickle finds it
    return _PackedLSTMModule


def __getattr__(name: str):
    if name == "_PackedLSTMModule":
        return _packed_lstm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def PackedBiLSTM(nH: int, nI: int) -> Model[List[Floats2d], List[Floats2d]]:
    """One BiLSTM layer (nH units per direction) over a list of per-doc arrays.

    thinc's `PyTorchLSTM` feeds a padded tensor to the LSTM unpacked, which lets the reverse
    direction read padding; this layer packs the docs' rows instead (`packing`). Training runs
    torch's LSTM; prediction on the CPU runs the same weights in numpy
    (`spacy_el.ner.numpy_forward.bilstm`), with or without torch installed."""

    def convert_inputs(model: Model, Xs: List[Floats2d], is_train: bool):
        import torch

        lengths = [len(X) for X in Xs]
        device = model.shims[0].device
        order, batch_sizes, restore = packing(lengths)
        X = xp2torch(model.ops.flatten(Xs), requires_grad=is_train, device=device)
        args = (X, torch.as_tensor(order, device=device), torch.as_tensor(batch_sizes),  # sizes stay on the CPU
                torch.as_tensor(restore, device=device))

        def backward(d_inputs: ArgsKwargs) -> List[Floats2d]:
            return model.ops.unflatten(torch2xp(d_inputs.args[0]), lengths)

        return ArgsKwargs(args=args, kwargs={}), backward

    def convert_outputs(model: Model, inputs_outputs, is_train: bool):
        Xs, Ytorch = inputs_outputs
        lengths = [len(X) for X in Xs]

        def backward(dYs: List[Floats2d]) -> ArgsKwargs:
            dY = xp2torch(model.ops.flatten(dYs), device=model.shims[0].device)
            return ArgsKwargs(args=(Ytorch,), kwargs={"grad_tensors": dY})

        return model.ops.unflatten(torch2xp(Ytorch), lengths), backward

    def predict(model: Model, Xs: List[Floats2d]) -> List[Floats2d]:
        ops = model.ops
        return [ops.asarray2f(Y) for Y in bilstm(module_state(model), [ops.to_numpy(X) for X in Xs])]

    lstm = torch_module_node(lambda: _packed_lstm_class()(nI, nH), predict, convert_inputs=convert_inputs,
                             convert_outputs=convert_outputs, dims={"nI": nI, "nO": 2 * nH})

    def forward(model: Model, Xs: List[Floats2d], is_train: bool):
        if not any(len(X) for X in Xs):  # nothing to read: no LSTM call on an empty packed batch
            return [model.ops.alloc2f(len(X), 2 * nH) for X in Xs], lambda dYs: [model.ops.alloc2f(*X.shape) for X in Xs]
        return lstm(Xs, is_train)

    # Two nodes, as the padded wrapper this replaces had: taggers saved before load unchanged.
    return Model("packed_bilstm", forward, layers=[lstm], dims={"nI": nI, "nO": 2 * nH})
