"""Shared fixtures: a tiny random 2-layer BERT (real HF code paths, no download) and data paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
#: The project's shared data folder sits beside the checkout (tests that need it skip without it).
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT saved as a plain HF directory, with MiniLM's real
    WordPiece tokenizer, so encoder code runs end to end in well under a second."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from spacy_el.models import minilm_dir

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bz2_pickle():
    """`write(path, obj)`: `obj` pickled into a bz2 file, the layout of drug-named-entity-recognition's
    `drug_ner_dictionary.pkl.bz2` (KB format `drug-ner`)."""
    import bz2
    import pickle

    def write(path: Path, obj) -> Path:
        with bz2.open(path, "wb") as f:
            pickle.dump(obj, f)
        return path

    return write
