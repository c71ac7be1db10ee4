"""Block-attention SFT (training/block_attention.py) on the tiny random Llama (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatbot.config import AnswerSettings
from chatbot.model import load_causal_lm
from chatbot.prompt import Source, Turn, build_messages, passage_pieces
from helpers import first_token_logits_blocked, tiny_llama
from training.block_attention import encode, reply_logits, train_block_sft
from training.trainers import TrainSettings

SOURCES = [
    Source(1, "a", "Delivery times", "Orders leave our warehouse within two working days."),
    Source(2, "b", "Returns", "Unused items can be returned within 30 days for a full refund."),
    Source(3, "c", "Gift cards", "Gift cards never expire."),
]


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    """The tiny Llama with large weights and its folder: outputs depend sharply on every position."""
    path = tiny_llama(tmp_path_factory.mktemp("sharp-lm") / "tiny", initializer_range=0.3)
    return path, *load_causal_lm(path)


def row(tokenizer, question: str, history: list[Turn], reply: str) -> dict:
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    messages, kept, _ = build_messages(AnswerSettings(), SOURCES, history, question, count, 16)
    return {"prompt": messages, "completion": [{"role": "assistant", "content": reply}],
            "passages": [s.text for s in kept], "pieces": passage_pieces(kept)}


def test_the_training_forward_computes_the_prompt_as_the_passage_cache_serves_it(sharp):
    _, model, tokenizer = sharp
    history = [Turn("customer", "Hi, a question about my order."), Turn("bot", "Of course, go ahead.")]
    example_row = row(tokenizer, "Can I send it back?", history, "Yes, within 30 days [2].")
    example = encode(tokenizer, example_row)
    assert len(example.blocks) == 6 and example.context  # a label and a body per passage
    with torch.inference_mode():
        first = reply_logits(model, example)[0].numpy()
    reference = first_token_logits_blocked(model, tokenizer, example_row["prompt"], example_row["pieces"])
    np.testing.assert_allclose(first, reference, atol=1e-3 * np.abs(reference).max())
    with torch.inference_mode():
        whole = model(input_ids=torch.tensor([example.ids])).logits[0, example.reply - 1].numpy()
    assert np.abs(whole - reference).max() > 0.05 * np.abs(reference).max()  # the blocks are what differs


def test_a_few_steps_lower_the_loss_and_save_an_adapter(sharp, tmp_path):
    path, _, tokenizer = sharp
    rows = [row(tokenizer, "How long does delivery take?", [], "Two working days [1]."),
            row(tokenizer, "Do gift cards expire?", [], "No, never [3]."),
            {"prompt": [{"role": "user", "content": "hello"}], "completion": [{"role": "assistant", "content": "Hi!"}]}]
    settings = TrainSettings(max_steps=6, batch_size=3, learning_rate=5e-3, lora_r=4, lora_alpha=8)
    logged = []
    metrics = train_block_sft(path, rows, tmp_path / "adapter", settings, log=logged.append)
    assert metrics["steps"] == 6 and metrics["blocked_examples"] == 2 and metrics["dropped"] == 0
    losses = [float(line.rsplit(" ", 1)[1]) for line in logged]
    assert losses[-1] < losses[0]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "adapter" / "tokenizer.json").exists()


def test_train_routes_sft_with_block_attention_here_and_refuses_it_for_other_methods(sharp, tmp_path):
    from training.trainers import train

    path, _, tokenizer = sharp
    rows = [row(tokenizer, "Do gift cards expire?", [], "No, never [3].")]
    metrics = train("sft", path, rows, tmp_path / "sft", TrainSettings(max_steps=1, batch_size=1, block_attention=True))
    assert metrics["blocked_examples"] == 1
    pairs = [{"prompt": rows[0]["prompt"], "chosen": rows[0]["completion"], "rejected": rows[0]["completion"]}]
    with pytest.raises(ValueError, match="dpo: block attention is for sft only"):
        train("dpo", path, pairs, tmp_path / "dpo", TrainSettings(block_attention=True))
