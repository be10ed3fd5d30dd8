"""Prediction through spaCy's `MultiHashEmbed` with its mixing layer folded into the tables.

`MultiHashEmbed` concatenates one hashed-embedding row per attribute (NORM, PREFIX, …) and the
projected static vector, then mixes them with a `Maxout` layer: a (width·pieces × width·parts)
matrix product per token, the costliest step of a BiLSTM tagger on one CPU thread after the
LSTM itself. Everything before the max is linear, so the product splits by part:
`W · [e_1; …; e_k; S v] = W_1 e_1 + … + W_k e_k + (W_s S) v`. With each table premultiplied
(`E_i W_iᵀ`, and `W_s S` for the static vectors), predicting is a sum of gathered rows, with
the same scores up to float rounding.

The folded tables are built on the first prediction and kept while the weights stay the same
arrays; a training pass drops them (the optimizer updates in place), and swapped weights (spaCy
evaluates with averaged ones, a load replaces them) rebuild them. Training runs spaCy's layer
unchanged, and nothing is saved: a pipeline's files are the same."""
from __future__ import annotations

from typing import Dict, List

from spacy.tokens import Doc
from spacy.vectors import Mode, Vectors
from thinc.api import Model
from thinc.types import Floats2d


def fold_for_prediction(embed: Model[List[Doc], List[Floats2d]]) -> Model[List[Doc], List[Floats2d]]:
    """`embed`, a `spacy.ml.models.tok2vec.MultiHashEmbed` layer, predicting through folded
    tables (same model object, nodes and files; only its forward changes)."""
    by_name: Dict[str, List[Model]] = {}
    for node in embed.walk():
        by_name.setdefault(node.name, []).append(node)
    if not all(len(by_name.get(name, ())) == 1 for name in ("extract_features", "maxout", "layernorm")) \
            or not by_name.get("hashembed") or len(by_name.get("static_vectors", ())) > 1:
        raise ValueError(f"fold_for_prediction: {embed.name!r} is not a MultiHashEmbed layer")
    extractor, maxout, layernorm = by_name["extract_features"][0], by_name["maxout"][0], by_name["layernorm"][0]
    hash_tables, static = by_name["hashembed"], by_name.get("static_vectors", [None])[0]
    train_forward = embed._func
    folded: Dict[str, object] = {}

    def weights() -> list:
        arrays = [table.get_param("E") for table in hash_tables] + [maxout.get_param("W"), maxout.get_param("b")]
        return arrays + ([static.get_param("W")] if static is not None else [])

    def fold() -> None:
        nO, nP, nI = maxout.get_param("W").shape
        W = maxout.ops.reshape2f(maxout.get_param("W"), nO * nP, nI)
        tables, start = [], 0
        for table in hash_tables:
            E = table.get_param("E")
            tables.append(maxout.ops.gemm(E, maxout.ops.as_contig(W[:, start:start + E.shape[1]]), trans2=True))
            start += E.shape[1]
        static_W = None
        if static is not None:  # (nO·nP, width) · (width, nM): the static vectors straight to the pieces
            static_W = maxout.ops.gemm(maxout.ops.as_contig(W[:, start:]), static.get_param("W"))
        folded.update(weights=weights(), tables=tables, static_W=static_W, shape=(nO, nP))

    def forward(model: Model, docs: List[Doc], is_train: bool):
        if is_train:
            folded.clear()  # training updates the weights in place: fold afresh when next predicting
            return train_forward(model, docs, is_train)
        vectors = docs[0].vocab.vectors if docs else None
        if static is not None and not (isinstance(vectors, Vectors) and vectors.mode == Mode.default):
            return train_forward(model, docs, is_train)  # floret or other vector tables: spaCy's own path
        if not folded or any(a is not b for a, b in zip(folded["weights"], weights())):
            fold()
        ops = model.ops
        lengths = [len(doc) for doc in docs]
        nO, nP = folded["shape"]
        if not sum(lengths):
            return [ops.alloc2f(0, nO) for _ in docs], lambda dY: []
        ids = ops.flatten(extractor.predict(docs))
        Y = ops.alloc2f(len(ids), nO * nP)
        for table, E in zip(hash_tables, folded["tables"]):
            keys = ops.hash(ops.as_contig(ids[:, table.attrs["column"]], dtype="uint64"), table.attrs["seed"]) % E.shape[0]
            Y += ops.gather_add(E, keys)
        if static is not None:
            keys = ops.flatten([doc.to_array(vectors.attr) for doc in docs])
            rows = vectors.find(keys=keys)
            V = ops.as_contig(ops.asarray(vectors.data)[rows])
            V[rows < 0] = 0  # no vector: zero, as StaticVectors does
            Y += ops.gemm(V, folded["static_W"], trans2=True)
        Y += ops.reshape1f(maxout.get_param("b"), nO * nP)
        Z = layernorm.predict(ops.maxout(ops.reshape3f(Y, len(ids), nO, nP))[0])
        return ops.unflatten(Z, lengths), lambda dY: []

    embed.replace_callbacks(forward, init=embed.init)
    return embed
