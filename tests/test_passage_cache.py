"""The passage state cache of the llama.cpp backend, on the tiny random Llama (seconds)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from chatbot.config import AnswerSettings
from chatbot.gguf_export import export_gguf
from chatbot.model import load_causal_lm
from chatbot.passage_cache import KVLayout, PassageCache, SeqState, block_key, block_ranges, rope_shift
from chatbot.prompt import Source, Turn, build_messages, passage_pieces
from helpers import first_token_logits_blocked, tiny_llama

pytest.importorskip("llama_cpp")

SOURCES = [
    Source(1, "a", "Delivery times", "Orders leave our warehouse within two working days; express arrives the next day."),
    Source(2, "b", "Returns", "Unused items can be returned within 30 days for a full refund to the original card."),
    Source(3, "c", "Gift cards", "Gift cards never expire and work online and in every Tidewell store."),
]
HISTORY = [Turn("customer", "Hello, I have a few questions about an order I placed last week for a garden chair."),
           Turn("bot", "Of course, happy to help with your order. What would you like to know?")]
REPLY_TOKENS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny Llama with large weights: a passage placed at a wrong position changes its greedy reply."""
    return load_causal_lm(tiny_llama(tmp_path_factory.mktemp("sharp-lm") / "tiny", initializer_range=0.3))


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
    model, tokenizer = tiny
    return export_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.f32.gguf", "f32")


def backend_with(tiny, gguf, cache: PassageCache | None, slots: int = 2):
    from chatbot.llamacpp import LlamaCppBackend

    return LlamaCppBackend(gguf, tiny[1], "tiny", threads=2, context=1024, max_concurrent=slots, passages=cache)


def prompt(tokenizer, sources: list[Source], history: list[Turn], question: str):
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    messages, kept, _ = build_messages(AnswerSettings(), sources, history, question, count, REPLY_TOKENS)
    return messages, passage_pieces(kept)


def assert_close(logits: np.ndarray, reference: np.ndarray) -> None:
    """Within the f16 cache's rounding: a block at a wrong position is off by about a third of the scale."""
    assert np.abs(logits - reference).max() < 0.02 * np.abs(reference).max()


def reply(backend, messages, passages) -> str:
    return "".join(backend.generate(messages, REPLY_TOKENS, 0.0, passages))


@pytest.fixture
def first_logits(monkeypatch):
    """The logits each llama.cpp request samples its first token from, by its prompt (the real sampler runs)."""
    import chatbot.llamacpp as llamacpp

    seen: dict[tuple[int, ...], np.ndarray] = {}
    sample = llamacpp.sample

    def recording(logits, request):
        if not request.generated:
            seen[tuple(request.ids)] = logits.copy()
        return sample(logits, request)

    monkeypatch.setattr(llamacpp, "sample", recording)
    return lambda backend, messages: seen[tuple(backend.prompt_ids(messages))]


def test_cached_blocks_give_the_blocked_prompt_wherever_they_are_placed(tiny, tiny_gguf, tmp_path, first_logits):
    cache = PassageCache(tmp_path / "states", 64 << 20)
    backend = backend_with(tiny, tiny_gguf, cache)
    short = prompt(tiny[1], SOURCES, [], "How long does delivery take?")
    long = prompt(tiny[1], SOURCES, HISTORY, "And can I send the chair back?")  # the same blocks ~40 tokens later
    for messages, passages in (short, long):
        reply(backend, messages, passages)
        assert_close(first_logits(backend, messages), first_token_logits_blocked(tiny[0], tiny[1], messages, passages))
    assert cache.stats.computed == 6 and cache.stats.hits >= 6  # 3 labels, 3 bodies: placed again, turned, not computed
    full = backend_with(tiny, tiny_gguf, None)
    assert reply(full, *long) != reply(backend, *long)  # the blocks' separate attention is what was compared


def test_reordered_passages_reuse_every_block_and_an_edit_computes_only_its_own(tiny, tiny_gguf, tmp_path, first_logits):
    cache = PassageCache(tmp_path / "states", 64 << 20)
    backend = backend_with(tiny, tiny_gguf, cache)
    reply(backend, *prompt(tiny[1], SOURCES, [], "Do gift cards expire?"))
    swapped = [SOURCES[1], SOURCES[0], SOURCES[2]]
    swapped = [Source(i + 1, s.entry_id, s.title, s.text) for i, s in enumerate(swapped)]
    messages, passages = prompt(tiny[1], swapped, HISTORY, "Do gift cards expire?")
    reply(backend, messages, passages)
    assert_close(first_logits(backend, messages), first_token_logits_blocked(tiny[0], tiny[1], messages, passages))
    assert cache.stats.computed == 6  # the labels and bodies of the first prompt, each in its new place
    edited = [*swapped[:2], Source(3, "c", "Gift cards", "Gift cards expire after five years.")]
    reply(backend, *prompt(tiny[1], edited, HISTORY, "Do gift cards expire?"))
    assert cache.stats.computed == 7


def test_concurrent_requests_sharing_passages_get_their_own_replies(tiny, tiny_gguf, tmp_path, first_logits):
    backend = backend_with(tiny, tiny_gguf, PassageCache(None, 64 << 20), slots=3)
    questions = ["How long does delivery take?", "Can I return a used item?", "Do gift cards expire?",
                 "Where is my parcel?", "Is express delivery available?"]
    prompts = [prompt(tiny[1], SOURCES, HISTORY[: i % 3], q) for i, q in enumerate(questions)]
    alone = [reply(backend, *p) for p in prompts]
    together: dict[int, str] = {}

    def customer(i: int) -> None:
        together[i] = reply(backend, *prompts[i])

    threads = [threading.Thread(target=customer, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[i] for i in range(len(prompts))] == alone
    assert backend.decoder.copied > 0  # slots that had not served took the shared prefix from one that had
    for messages, passages in prompts:
        assert_close(first_logits(backend, messages), first_token_logits_blocked(tiny[0], tiny[1], messages, passages))


def test_a_corrupt_state_file_is_computed_again_and_the_reply_is_unchanged(tiny, tiny_gguf, tmp_path):
    folder = tmp_path / "states"
    messages, passages = prompt(tiny[1], SOURCES, HISTORY, "How long does delivery take?")
    first = reply(backend_with(tiny, tiny_gguf, PassageCache(folder, 64 << 20)), messages, passages)
    files = sorted(folder.glob("*.npz"))
    assert len(files) == 6
    files[0].write_bytes(files[0].read_bytes()[:-100])  # cut short
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped inside the keys
    files[1].write_bytes(bytes(data))
    cache = PassageCache(folder, 64 << 20)  # a new process: nothing in memory
    assert reply(backend_with(tiny, tiny_gguf, cache), messages, passages) == first
    assert (cache.stats.corrupt, cache.stats.computed, cache.stats.loaded) == (2, 2, 4)
    assert len(list(folder.glob("*.npz"))) == 6 and not list(folder.glob("*.tmp"))


def test_a_promoted_model_or_another_system_prompt_misses_the_cache():
    key = block_key("v1.q8_0.gguf", [1, 2, 3], [7, 8, 9])
    assert key == block_key("v1.q8_0.gguf", [1, 2, 3], [7, 8, 9])
    assert key != block_key("v2.q8_0.gguf", [1, 2, 3], [7, 8, 9])
    assert key != block_key("v1.q8_0.gguf", [1, 2, 4], [7, 8, 9])
    assert key != block_key("v1.q8_0.gguf", [1, 2, 3], [7, 8, 10])


def test_the_memory_budget_holds_and_keeps_the_recently_used(tmp_path):
    state = lambda: SeqState(np.arange(10, dtype=np.int32), np.zeros((2, 10, 8), np.float16),  # noqa: E731
                             np.zeros((2, 10, 8), np.float16))
    cache = PassageCache(tmp_path / "states", budget_bytes=3 * state().nbytes)
    for key in "abc":
        cache.put(key, state())
    cache.get("a")  # used again: "b" is now the oldest
    cache.put("d", state())
    assert list(cache.memory) == ["c", "a", "d"] and cache.bytes <= cache.budget
    assert cache.get("b") is not None and cache.stats.loaded == 1  # evicted from memory, still on disk


@pytest.mark.parametrize("neox", [False, True])
def test_rope_shift_turns_keys_to_another_position_and_back(neox):
    layout = KVLayout(layers=2, kv_heads=2, head_dim=8, rope_base=10000.0, neox=neox)
    keys = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float16)
    there = rope_shift(keys, 37, layout)
    assert np.abs(there.astype(np.float32) - keys).max() > 0.1
    np.testing.assert_allclose(rope_shift(there, -37, layout), keys, atol=1e-2)
    np.testing.assert_allclose(rope_shift(rope_shift(keys, 20, layout), 17, layout), there, atol=1e-2)
    # a turn keeps each rotated pair's length
    pairs = (lambda k: k.reshape(2, 5, 2, 2, 4)) if neox else (lambda k: k.reshape(2, 5, 2, 4, 2))
    axis = -2 if neox else -1
    np.testing.assert_allclose(np.linalg.norm(pairs(there.astype(np.float32)), axis=axis),
                               np.linalg.norm(pairs(keys.astype(np.float32)), axis=axis), rtol=1e-2)



def test_warmed_passages_are_ready_before_the_first_question(tiny, tiny_gguf):
    import time

    from chatbot.prompt import passage_body

    cache = PassageCache(None, 64 << 20)
    backend = backend_with(tiny, tiny_gguf, cache)
    bodies = [passage_body(s.title, s.text) for s in SOURCES]
    sample = prompt(tiny[1], SOURCES[:1], [], "A question?")  # the context every block is computed in
    assert backend.warm(*sample, bodies) == 3
    deadline = time.monotonic() + 30
    while cache.stats.computed < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    reply(backend, *prompt(tiny[1], SOURCES, HISTORY, "Do gift cards expire?"))
    assert cache.stats.computed == 6  # the three bodies were ready; only the labels were computed
    assert backend_with(tiny, tiny_gguf, None).warm(*sample, bodies) == 0  # no cache, nothing to compute


def test_a_sequence_format_it_cannot_read_turns_the_cache_off_and_replies_stay_whole(tiny, tiny_gguf, caplog):
    from dataclasses import replace

    backend = backend_with(tiny, tiny_gguf, PassageCache(None, 64 << 20))
    backend.decoder.layout = replace(backend.decoder.layout, layers=3)  # as if llama.cpp wrote another layout
    messages, passages = prompt(tiny[1], SOURCES, HISTORY, "How long does delivery take?")
    with caplog.at_level("WARNING"):
        got = reply(backend, messages, passages)
    assert "passage cache turned off" in caplog.text and backend.decoder.passages is None
    assert got == reply(backend_with(tiny, tiny_gguf, None), messages, passages)  # prefilled whole instead
    warmed = backend_with(tiny, tiny_gguf, PassageCache(None, 64 << 20))
    warmed.decoder.layout = backend.decoder.layout
    warmed.warm(messages, passages, [passages[1]])
    assert reply(warmed, messages, passages) == got and warmed.decoder.passages is None
