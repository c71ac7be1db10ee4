"""Shared fixtures: tiny random models (seconds) for unit tests, the real bundled ones for `slow` tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory) -> Path:
    """A 2-layer random BERT with the real MiniLM tokenizer, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from retrieval import bundled_embedder_path

    root = tmp_path_factory.mktemp("tiny-embedder")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_embedder_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    word = Transformer(str(root / "bert"), max_seq_length=256)
    model = SentenceTransformer(modules=[word, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="session")
def tiny_embedder(tiny_embedder_path):
    from retrieval import Embedder

    return Embedder(tiny_embedder_path)


@pytest.fixture(scope="session")
def real_embedder():
    from retrieval import Embedder

    return Embedder()


@pytest.fixture
def settings():
    from retrieval import RetrievalSettings

    return RetrievalSettings()


@pytest.fixture
def make_kb(tmp_path, tiny_embedder, settings):
    """A fresh knowledge base in its own folder, on the tiny embedder unless one is given."""
    from retrieval import KnowledgeBase

    made = []

    def make(name: str = "kb", embedder=None, **overrides):
        for key, value in overrides.items():
            setattr(settings, key, value)
        kb = KnowledgeBase(tmp_path / name, settings, embedder or tiny_embedder)
        made.append(kb)
        return kb

    yield make
    for kb in made:
        kb.close()

