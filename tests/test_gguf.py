"""GGUF export and the llama.cpp backend, on the tiny random Llama (seconds)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from chatbot.backends import TransformersBackend
from chatbot.gguf_export import ExportError, export_gguf, rope_permute
from chatbot.model import load_causal_lm

PROMPTS = ["Where is my order?", "Can I return a grill I bought last month?", "Hi! Do you ship to Canada? Thanks"]


@pytest.fixture(scope="module")
def tiny(tiny_lm_path):
    return load_causal_lm(tiny_lm_path)


def read_back(path):
    """The GGUF as transformers reads it: de-quantized, Q and K permuted back."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def last_logits(model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        return model(**ids).logits[0, -1]


def test_rope_permutation_interleaves_the_two_halves_of_each_head():
    rows = torch.arange(8).float().numpy().reshape(8, 1)  # 2 heads of 4 rows: halves [0,1|2,3] [4,5|6,7]
    assert rope_permute(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_f32_export_reads_back_as_the_same_model(tiny, tmp_path):
    model, tokenizer = tiny
    path = export_gguf(model, tokenizer, tmp_path / "tiny.f32.gguf", "f32")
    back = read_back(path)
    for text in PROMPTS:
        assert torch.allclose(last_logits(model, tokenizer, text), last_logits(back, tokenizer, text), atol=1e-5)
    assert not (tmp_path / "tiny.f32.gguf.partial").exists()


def test_q8_export_stays_close_to_the_float_model(tiny, tmp_path):
    model, tokenizer = tiny
    back = read_back(export_gguf(model, tokenizer, tmp_path / "tiny.q8_0.gguf", "q8_0"))
    for text in PROMPTS:
        a, b = last_logits(model, tokenizer, text), last_logits(back, tokenizer, text)
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999 and not torch.equal(a, b)


def test_export_refuses_an_unknown_type_or_another_vocabulary(tiny, tiny_embedder_path, tmp_path):
    from transformers import AutoTokenizer

    model, tokenizer = tiny
    with pytest.raises(ExportError, match="q3"):
        export_gguf(model, tokenizer, tmp_path / "x.gguf", "q3")
    bert = AutoTokenizer.from_pretrained(tiny_embedder_path)
    with pytest.raises(ExportError, match="not the bundled model's"):
        export_gguf(model, bert, tmp_path / "x.gguf", "f32")
    assert not list(tmp_path.iterdir())


def test_llama_cpp_greedy_output_matches_transformers(tiny, tiny_lm_path, tmp_path):
    from chatbot.llamacpp import LlamaCppBackend

    model, tokenizer = tiny
    path = export_gguf(model, tokenizer, tmp_path / "tiny.f32.gguf", "f32")
    fast = LlamaCppBackend(path, tokenizer, "tiny", threads=2, context=1024)
    slow = TransformersBackend(model, tokenizer, "tiny")
    for text in PROMPTS:
        messages = [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": text}]
        ours, theirs = fast.generate(messages, 16), slow.generate(messages, 16)
        assert "".join(ours) == "".join(theirs) and ours.text
        assert ours.completion_tokens == theirs.completion_tokens == 16
        assert ours.prompt_tokens == theirs.prompt_tokens


def llama_cpp_home(config, tmp_path):
    """`config` set to serve the tiny model through llama.cpp, with a one-entry knowledge base."""
    from chatbot import open_kb

    config.model.backend = "llama.cpp"
    config.model.gguf_type = "f32"
    config.answer.mode = "generate"
    config.answer.handoff_confidence = 0.0  # the tiny embedder's confidences mean nothing
    faq = tmp_path / "faq.csv"
    faq.write_text("id,question,answer\nship,How long does shipping take?,Three to five days.\n", encoding="utf-8")
    kb = open_kb(config)
    kb.add([faq])
    return kb


def test_the_engine_serves_through_llama_cpp_with_the_gguf_exported_once(home_config, tmp_path):
    from chatbot import SupportBot

    kb = llama_cpp_home(home_config, tmp_path)
    bot = SupportBot(home_config, kb)
    reply = bot.ask("How long does shipping take?")
    assert reply.mode == "generate" and reply.reply_tokens > 0 and reply.model
    exported = list((home_config.models_dir / "gguf").glob("*.f32.gguf"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    SupportBot(home_config, kb).ask("And to Canada?")
    assert exported[0].stat().st_mtime_ns == stamp
    bot.log.close()
    kb.close()


def test_with_the_passage_cache_the_engine_places_stored_passages_beside_the_served_gguf(home_config, tmp_path):
    from chatbot import SupportBot

    home_config.model.passage_cache = "on"
    kb = llama_cpp_home(home_config, tmp_path)
    bot = SupportBot(home_config, kb)
    assert bot.warm_passages() == 1  # the knowledge base's one passage, computed while idle
    reply = bot.ask("How long does shipping take?")
    assert reply.mode == "generate" and reply.reply_tokens > 0
    cache = bot.backend.decoder.passages
    assert cache.stats.computed == 2 and cache.stats.hits >= 1  # the passage (warmed) and its label "[1]"
    gguf = next((home_config.models_dir / "gguf").glob("*.f32.gguf"))
    assert len(list(gguf.with_suffix(".passages").glob("*.npz"))) == 2  # a promoted version has its own folder
    bot.log.close()
    kb.close()


def test_the_passage_cache_follows_how_the_serving_version_was_trained(home_config, tmp_path, registry):
    from chatbot import make_backend
    from chatbot.config import ConfigError
    from chatbot.engine import passage_cache_on

    assert passage_cache_on("auto", True) and not passage_cache_on("auto", False)
    assert passage_cache_on("on", False) and not passage_cache_on("off", True)
    with pytest.raises(ConfigError, match="model.passage_cache 'yes'"):
        passage_cache_on("yes", True)
    llama_cpp_home(home_config, tmp_path).close()
    assert make_backend(home_config).decoder.passages is None  # "auto", and a version trained on whole prompts
    versions = registry(home_config)
    card = versions.card(versions.serving_version("lm"))
    card.settings["block_attention"] = True  # as `train sft --block-attention` records it
    versions.save_card(card)
    assert make_backend(home_config).decoder.passages is not None


def test_the_gate_measures_a_version_as_it_would_be_served(home_config, tmp_path, registry, monkeypatch):
    import chatbot.engine
    from training.gate import evaluate_version, set_hash

    llama_cpp_home(home_config, tmp_path).close()
    versions = registry(home_config)
    version = versions.ensure_base(home_config.model.path)
    card = versions.card(version)
    card.settings["block_attention"] = True
    versions.save_card(card)
    served = []
    real = chatbot.engine.llama_cpp_backend

    def recording(config, name, path, adapter, progress, passage_cache):
        served.append((name, passage_cache))
        return real(config, name, path, adapter, progress, passage_cache)

    monkeypatch.setattr(chatbot.engine, "llama_cpp_backend", recording)
    rows = [{"question": "How long does shipping take?", "answer": "Three to five days.", "expected_id": ""}]
    metrics = evaluate_version(home_config, versions, version, rows)
    assert served == [(version, True)] and metrics["questions"] == 1  # llama.cpp with the passage cache
    home_config.model.passage_cache = "off"
    assert set_hash(rows, home_config) != metrics["eval_set"]  # served otherwise, measured again


def test_a_warm_home_answers_without_importing_torch(home_config, tmp_path):
    """Importing torch is most of a cold start (2-3 s): serving from a home whose GGUF and ONNX exports
    exist needs neither torch nor transformers' model classes or configs (tokenizer classes only)."""
    from chatbot import SupportBot

    kb = llama_cpp_home(home_config, tmp_path)
    SupportBot(home_config, kb).ask("How long does shipping take?")  # exports both models (with torch)
    kb.close()
    settings = [f"retrieval.embedder={home_config.retrieval.embedder}", f"model.path={home_config.model.path}",
                "model.backend=llama.cpp", "model.gguf_type=f32", "answer.mode=generate", "answer.handoff_confidence=0",
                "model.max_new_tokens=4"]
    script = ("import sys; from chatbot import SupportBot, load_config; "
              f"reply = SupportBot(load_config({str(home_config.home)!r}, {settings!r}, env={{}})).ask('Shipping?'); "
              "assert reply.mode == 'generate' and reply.reply_tokens > 0, reply; "
              "print(sorted(m for m in sys.modules if m == 'torch' or '.modeling_' in m or '.configuration_' in m))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
    model, tokenizer = tiny
    return export_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.f32.gguf", "f32")


def chat(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": text}]


def test_greedy_output_is_the_same_alone_and_inside_a_batch(tiny, tiny_gguf):
    from chatbot.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_gguf, tiny[1], "tiny", threads=2, context=512, max_concurrent=3, draft_tokens=5)
    questions = PROMPTS + [p + " Please answer soon." for p in PROMPTS]
    lengths = [8, 20, 12, 16, 6, 24]  # requests finish at different steps while others join
    alone = ["".join(backend.generate(chat(q), n)) for q, n in zip(questions, lengths)]
    together: dict[int, str] = {}

    def customer(i: int) -> None:
        together[i] = "".join(backend.generate(chat(questions[i]), lengths[i]))

    threads = [threading.Thread(target=customer, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[i] for i in range(len(questions))] == alone
    assert len(set(alone)) > 1


@pytest.mark.slow
def test_drafts_from_the_prompt_save_steps_and_leave_greedy_output_unchanged(tiny):
    """On the bundled model (a random one only repeats a token, so every draft would be right): replies
    copy their passage, some drafts are taken and some are not, and the replies are the same."""
    from chatbot.llamacpp import LlamaCppBackend
    from chatbot.model import bundled_gguf

    passage = ("Orders placed before 2 pm ship the same day. Standard shipping takes 3 to 5 business days and "
               "is free over $50; express takes 1 to 2 days and costs $15.")
    questions = ["How long does standard shipping take?", "What does express shipping cost?", "Is shipping free?"]
    plain, drafting = (LlamaCppBackend(bundled_gguf(), tiny[1], "bundled", threads=2, context=512, max_concurrent=1,
                                       draft_tokens=k) for k in (0, 5))
    replies = {b: [b.generate(chat(f"Passage: {passage}\n\nQuestion: {q}"), 48) for q in questions] for b in (plain, drafting)}
    texts = {b: ["".join(g) for g in generations] for b, generations in replies.items()}
    assert texts[drafting] == texts[plain]
    tokens = sum(g.completion_tokens for g in replies[drafting])
    assert drafting.decoder.steps < tokens  # without drafts each token takes a step (the first, its prompt's)
    assert drafting.decoder.drafted > drafting.decoder.taken > 0


def test_an_abandoned_reply_frees_its_slot_and_a_too_long_prompt_is_refused(tiny, tiny_gguf):
    from chatbot.backends import BackendError
    from chatbot.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_gguf, tiny[1], "tiny", threads=2, context=256, max_concurrent=1)
    stream = iter(backend.generate(chat(PROMPTS[0]), 200))
    next(stream)
    stream.close()  # the customer went away
    finished = backend.generate(chat(PROMPTS[1]), 5)
    reader = threading.Thread(target=lambda: "".join(finished))
    reader.start()
    reader.join(60)  # with the slot still taken, this reply would wait forever
    assert not reader.is_alive() and finished.text and finished.completion_tokens == 5
    with pytest.raises(BackendError, match="exceeds the 256-token context"):
        backend.generate(chat("word " * 300), 10)


def test_sampling_follows_the_temperature(tiny, tiny_gguf):
    from chatbot.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_gguf, tiny[1], "tiny", threads=2, context=512, max_concurrent=2)
    greedy = {"".join(backend.generate(chat(PROMPTS[0]), 10)) for _ in range(2)}
    sampled = {"".join(backend.generate(chat(PROMPTS[0]), 10, temperature=1.0)) for _ in range(4)}
    assert len(greedy) == 1 and len(sampled) > 1
