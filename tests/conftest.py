"""Shared fixtures: tiny random models (seconds) for unit tests, the real bundled ones for `slow` tests."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throw-away PostgreSQL server for the session (tests/pgcluster.py); each test takes its own database.
    Without the server binaries the PostgreSQL cases are skipped here, and fail in CI (`make test` installs them)."""
    from pgcluster import Cluster, server_bin

    bin_dir = server_bin()
    if bin_dir is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("PostgreSQL's server is not installed (apt-get install postgresql)")
    cluster = Cluster(bin_dir).start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def demo_kb_into(tmp_path_factory, real_embedder):
    """Puts the demo knowledge base (data/kb on the real embedder) in a folder: embedded once per session (about 6 s
    on 2 cores, more on a busy machine), then copied for each module that wants one (a fraction of a second)."""
    from retrieval import KnowledgeBase

    template = tmp_path_factory.mktemp("demo-kb") / "default"
    kb = KnowledgeBase(template, embedder=real_embedder)
    kb.add([DATA / "kb"])
    kb.close()

    def copy(folder: Path) -> Path:
        shutil.copytree(template, folder)
        return folder

    return copy


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Where a store keeps its tables, once per engine: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite"
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def kb_database(request) -> str:
    """Where a knowledge base keeps its store, once per engine: "" (its folder's SQLite file), then a fresh
    PostgreSQL database."""
    return "" if request.param == "sqlite" else request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture
def settings():
    from retrieval import RetrievalSettings

    return RetrievalSettings()


@pytest.fixture
def make_kb(tmp_path, tiny_embedder, settings):
    """A fresh knowledge base in its own folder, on the tiny embedder unless one is given."""
    from retrieval import KnowledgeBase

    made = []

    def make(name: str = "kb", embedder=None, database: str = "", **overrides):
        for key, value in overrides.items():
            setattr(settings, key, value)
        kb = KnowledgeBase(tmp_path / name, settings, embedder or tiny_embedder, database)
        made.append(kb)
        return kb

    yield make
    for kb in made:
        kb.close()



@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory) -> Path:
    """A 2-layer Llama with random weights (fixed seed) and the real SmolLM2 tokenizer and chat template."""
    from helpers import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-lm") / "tiny-llama")


@pytest.fixture
def home_config(tmp_path, tiny_embedder_path, tiny_lm_path):
    """A Config on a fresh home using the tiny embedder and the tiny LM."""
    from chatbot import load_config

    return load_config(tmp_path / "home", [
        f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=12",
        "model.temperature=1.0",  # greedy decoding of random weights repeats one token
        "model.backend=transformers",  # test_gguf.py covers llama.cpp
    ], env={})


@pytest.fixture
def registry():
    """Opens the version registry of a Config (or of a home, by its config.toml) for assertions; closed after."""
    from chatbot import Config, load_config
    from chatbot.log import open_database
    from chatbot.versions import Versions

    opened = []

    def open_registry(config: Config | Path):
        config = config if isinstance(config, Config) else load_config(config, env={})
        opened.append(open_database(config.log_database))
        return Versions(config.models_root, opened[-1])

    yield open_registry
    for db in opened:
        db.close()


@pytest.fixture(scope="session")
def bundled_model_home(tmp_path_factory) -> Path:
    """A home with the bundled SmolLM2 converted (once per test session: about 20 s)."""
    from chatbot.model import provision_bundled

    home = tmp_path_factory.mktemp("bundled-home")
    provision_bundled(home / "models")
    return home
