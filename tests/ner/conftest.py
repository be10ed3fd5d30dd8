"""A tiny bilstm_ner pipeline trained to overfit a handful of sentences (shared by the NER tests)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import List, Tuple

import pytest
import spacy
import torch
from spacy.language import Language
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.api import Adam

TRAIN_DATA: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("Barack Obama visited Paris last week .", [(0, 12, "PER"), (21, 26, "LOC")]),
    ("Apple opened a store in New York City .", [(0, 5, "ORG"), (24, 37, "LOC")]),
    ("Angela Merkel met executives from Siemens in Berlin .", [(0, 13, "PER"), (34, 41, "ORG"), (45, 51, "LOC")]),
    ("The weather was mild on Tuesday .", []),
    ("Google hired John Smith .", [(0, 6, "ORG"), (13, 23, "PER")]),
    ("Fans in London cheered for Arsenal .", [(8, 14, "LOC"), (27, 34, "ORG")]),
]

# One intra-op thread: on a shared 2-core machine a second OpenMP thread mostly spins.
torch.set_num_threads(1)

#: Small widths keep every test fast; the architecture is the one the real configs use.
TINY_MODEL = {
    "@architectures": "spacy_el.BiLSTMTagger.v1",
    "embed_width": 32,
    "hidden_width": 32,
    "depth": 1,
    "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    "rows": [500, 100, 200, 50],
    "include_static_vectors": False,
}

#: bilstm_ner v2 at test size: CRF, characters and the KB-name flags of `kb_gazetteer`.
TINY_V2 = {
    "@architectures": "spacy_el.BiLSTMTagger.v2",
    "hidden_width": 32,
    "depth": 1,
    "crf": True,
    "features": {
        "@architectures": "spacy_el.TokenFeatures.v1",
        "embed_width": 32,
        "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
        "rows": [500, 100, 200, 50],
        "include_static_vectors": False,
        "char_width": 16,
        "char_length": 12,
        "gazetteers": ["kb_names"],
        "transformer": None,
        "transformer_width": 0,
    },
}


def make_examples(nlp: Language, data=TRAIN_DATA) -> List[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def train_tiny(nlp: Language, examples: List[Example], n_iter: int = 50) -> Language:
    fix_random_seed(0)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return nlp


def trf_overrides(train_path, tiny_bert_dir) -> dict:
    """`spacy train` overrides that make a transformer config tiny: the test's BERT, no vectors,
    16-wide features and BiLSTM, the sample data as train and dev."""
    return {
        "paths.train": str(train_path), "paths.dev": str(train_path),
        "paths.transformer": str(tiny_bert_dir), "paths.vectors": None,
        "components.bilstm_ner.model.features.include_static_vectors": False,
        "components.bilstm_ner.model.features.transformer_width": 16,
        "components.bilstm_ner.model.hidden_width": 16,
    }


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The sample data and helpers, for tests that build their own pipelines."""
    return SimpleNamespace(
        TRAIN_DATA=TRAIN_DATA, TINY_MODEL=TINY_MODEL, TINY_V2=TINY_V2, make_examples=make_examples, train_tiny=train_tiny,
        trf_overrides=trf_overrides,
    )


@pytest.fixture(scope="package")
def trained_nlp() -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_ner", config={"model": TINY_MODEL})
    return train_tiny(nlp, make_examples(nlp))
