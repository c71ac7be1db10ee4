"""The embedder's ONNX Runtime path: exported once from the sentence-transformers folder, the same vectors
as PyTorch, reused by later processes, and PyTorch for models it cannot express; its int8 variant, and a
knowledge base keeping the precision its vectors were made with."""

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
        assert kb.embedder.runtime == "onnx-int8" and list((tmp_path / "kb").glob("encoder-*-int8.onnx"))
        assert kb.search("delivery to Canada")[0].entry_id == "ship-ca"
    finally:
        kb.close()


def _faq(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("id,question,answer\nship-ca,How long does delivery to Canada take?,5-10 business days.\n"
                    "gift,Do gift cards expire?,Never.\n", encoding="utf-8")
    return path


def test_int8_vectors_are_close_to_float_ones_under_another_id(tiny_embedder_path, tmp_path):
    int8 = Embedder(tiny_embedder_path, runtime="onnx-int8", cache_dir=tmp_path)
    onnx = Embedder(tiny_embedder_path, runtime="onnx", cache_dir=tmp_path)
    a, b = int8.encode(TEXTS), onnx.encode(TEXTS)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert 0.95 < np.min(np.sum(a * b, axis=1)) and not np.allclose(a, b, atol=1e-4)  # close, not the same
    assert int8.model_id == onnx.model_id + ":int8"  # cached float vectors are never taken for int8 ones
    assert {f.name for f in tmp_path.glob("encoder-*.onnx")} == {f"encoder-{onnx.weights_digest}.onnx",
                                                                 f"encoder-{onnx.weights_digest}-int8.onnx"}


@pytest.mark.parametrize("built, configured", [("onnx", "onnx-int8"), ("onnx-int8", "torch")])
def test_a_knowledge_base_keeps_the_precision_it_was_built_with(tiny_embedder_path, tmp_path, built, configured):
    """Queries are encoded like the stored vectors, whatever the configuration says later."""
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path), embedder_runtime=built))
    kb.add([_faq(tmp_path)])
    kb.close()
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path), embedder_runtime=configured))
    try:
        assert kb.embedder.runtime == built and kb.store.meta("embedder_runtime") == built
        assert kb.search("delivery to Canada")[0].entry_id == "ship-ca"
    finally:
        kb.close()


def test_float_runtimes_interchange(tiny_embedder_path, tmp_path):
    """PyTorch and float ONNX make the same vectors: a knowledge base built with one searches with the other."""
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path), embedder_runtime="onnx"))
    kb.add([_faq(tmp_path)])
    kb.close()
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path), embedder_runtime="torch"))
    try:
        assert kb.embedder.runtime == "torch"
    finally:
        kb.close()


def test_a_knowledge_base_from_before_int8_keeps_float_vectors(tiny_embedder_path, tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path), embedder_runtime="onnx"))
    kb.add([_faq(tmp_path)])
    with kb.store.write() as db:
        db.db.execute("DELETE FROM meta WHERE key = 'embedder_runtime'")  # as a store written before it was recorded
    kb.close()
    kb = KnowledgeBase(tmp_path / "kb", RetrievalSettings(embedder=str(tiny_embedder_path)))
    try:
        assert kb.embedder.runtime == "onnx"
    finally:
        kb.close()


@pytest.mark.parametrize("change", ["none", "no tokenizer.json", "no do_lower_case", "no tokenizer_class"])
def test_tokenizers_load_as_auto_tokenizer_builds_them(tiny_embedder_path, tmp_path, change):
    """The class tokenizer_config.json names, without torch; the same ids as AutoTokenizer, also where
    the config and tokenizer.json disagree (lower-casing) or there is only a slow vocabulary."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from retrieval import fast_tokenizer

    folder = tmp_path / "tokenizer"
    shutil.copytree(tiny_embedder_path, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if change == "no tokenizer.json":
        vocab = sorted(AutoTokenizer.from_pretrained(str(folder)).get_vocab().items(), key=lambda item: item[1])
        (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
        (folder / "tokenizer.json").unlink()
    elif change == "no do_lower_case":
        config.pop("do_lower_case", None)
        config["tokenizer_class"] = "BertTokenizer"
    elif change == "no tokenizer_class":
        config.pop("tokenizer_class", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")
    texts = [*TEXTS, "ÜBER Café WiFi", "Hello World"]
    ours, theirs = fast_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    assert type(ours) is type(theirs)
    for text in texts:
        assert ours(text, truncation=True, max_length=256)["input_ids"] == theirs(text, truncation=True, max_length=256)["input_ids"]
