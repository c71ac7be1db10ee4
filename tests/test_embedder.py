"""The embedder's ONNX Runtime path: exported once from the sentence-transformers folder, the same vectors
as PyTorch, reused by later processes, and PyTorch for models it cannot express."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import Embedder, KnowledgeBase, RetrievalSettings

TEXTS = ["How long does delivery to Canada take?", "gift cards " * 300, "x"]


def test_onnx_runtime_gives_the_pytorch_vectors(tiny_embedder_path, tmp_path):
    onnx = Embedder(tiny_embedder_path, runtime="onnx", cache_dir=tmp_path)
    torch = Embedder(tiny_embedder_path)
    assert onnx.runtime == "onnx" and torch.runtime == "torch"
    a, b = onnx.encode(TEXTS), torch.encode(TEXTS)
    assert a.shape == b.shape == (3, onnx.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999  # the long text is truncated alike
    assert onnx.count_tokens("hello world") == torch.count_tokens("hello world") == 2


def test_the_export_is_made_once_and_reused(tiny_embedder_path, tmp_path):
    Embedder(tiny_embedder_path, runtime="onnx", cache_dir=tmp_path).encode(["warm"])
    (file,) = tmp_path.glob("encoder-*.onnx")
    stamp = file.stat().st_mtime_ns
    again = Embedder(tiny_embedder_path, runtime="onnx", cache_dir=tmp_path)
    again.encode(["warm"])
    assert file.stat().st_mtime_ns == stamp and not list(tmp_path.glob("*.tmp"))


def test_models_the_export_cannot_express_run_on_pytorch(tiny_embedder_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    model = SentenceTransformer(str(tiny_embedder_path), device="cpu")
    cls = SentenceTransformer(modules=[model[0], Pooling(model.get_embedding_dimension(), "cls")], device="cpu")
    cls.save(str(tmp_path / "cls"))
    embedder = Embedder(tmp_path / "cls", runtime="onnx", cache_dir=tmp_path / "cache")
    assert embedder.runtime == "torch" and embedder.encode(["hi"]).shape == (1, embedder.dim)
    with pytest.raises(ValueError, match="runtime 'tensorrt'"):
        Embedder(tiny_embedder_path, runtime="tensorrt")


def test_a_knowledge_base_keeps_its_export_in_its_own_folder(tiny_embedder_path, tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path)))
    try:
        kb.add([_faq(tmp_path)])
        assert kb.embedder.runtime == "onnx" and list((tmp_path / "kb").glob("encoder-*.onnx"))
        assert kb.search("delivery to Canada")[0].entry_id == "ship-ca"
    finally:
        kb.close()


def _faq(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("id,question,answer\nship-ca,How long does delivery to Canada take?,5-10 business days.\n"
                    "gift,Do gift cards expire?,Never.\n", encoding="utf-8")
    return path
