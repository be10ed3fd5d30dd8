"""The BiLSTM tagger architectures: token features → bidirectional LSTM → per-token tag scores,
optionally followed by a linear-chain CRF's learned transition scores. Built from spaCy/thinc
layers, not from scratch.

`spacy_el.BiLSTMTagger.v1` (hashed subword features + static vectors, softmax per token) is kept
as released; `.v2` takes any token-feature sublayer (`spacy_el.TokenFeatures.v1`: characters, KB
gazetteer, transformer features) and a `crf` switch."""

from typing import List, Optional, Union

from spacy.ml.models.tok2vec import MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    ArgsKwargs,
    Dropout,
    Linear,
    Model,
    PyTorchWrapper,
    Softmax_v2,
    chain,
    torch2xp,
    with_array,
    with_padded,
    xp2torch,
    zero_init,
)
from thinc.types import Floats2d, Padded
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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
    embed = MultiHashEmbed(
        width=embed_width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors
    )
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


class _PackedLSTMModule(torch.nn.Module):
    """A bidirectional LSTM run on a *packed* batch: each sequence is read only up to its own
    length, so the backward direction of a short doc never starts on padding."""

    def __init__(self, nI: int, nH: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(nI, nH, num_layers=1, bidirectional=True)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(X, lengths, enforce_sorted=True)  # with_padded sorts by length
        Y, _ = self.lstm(packed)
        return pad_packed_sequence(Y, total_length=X.shape[0])[0]


def PackedBiLSTM(nH: int, nI: int) -> Model[List[Floats2d], List[Floats2d]]:
    """One BiLSTM layer (nH units per direction) over a list of per-doc arrays.

    thinc's `PyTorchLSTM` feeds the padded tensor to the LSTM unpacked, which lets the
    reverse direction read padding; this wrapper packs by length instead."""

    def convert_inputs(model: Model, Xp: Padded, is_train: bool):
        def backward(d_inputs: ArgsKwargs) -> Padded:
            return Padded(torch2xp(d_inputs.args[0]), Xp.size_at_t, Xp.lengths, Xp.indices)

        X = xp2torch(Xp.data, requires_grad=True, device=model.shims[0].device)
        lengths = torch.as_tensor(model.ops.to_numpy(Xp.lengths), dtype=torch.int64)  # CPU, as packing needs
        return ArgsKwargs(args=(X, lengths), kwargs={}), backward

    def convert_outputs(model: Model, inputs_outputs, is_train: bool):
        Xp, Ytorch = inputs_outputs

        def backward(dYp: Padded) -> ArgsKwargs:
            dY = xp2torch(dYp.data, device=model.shims[0].device)
            return ArgsKwargs(args=(Ytorch,), kwargs={"grad_tensors": dY})

        return Padded(torch2xp(Ytorch), Xp.size_at_t, Xp.lengths, Xp.indices), backward

    lstm = PyTorchWrapper(_PackedLSTMModule(nI, nH), convert_inputs=convert_inputs, convert_outputs=convert_outputs)
    lstm.set_dim("nI", nI)
    lstm.set_dim("nO", 2 * nH)
    return with_padded(lstm)
