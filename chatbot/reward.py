"""Reward models at serving time: score candidate replies to a prompt (best-of-n), and in the gate.

A reward model is a sequence classifier with one output, trained by `supportbot train reward` on pairs of
a preferred and a rejected reply (agents' edits over the bot's drafts, disliked replies an agent answered).
"""

from __future__ import annotations

import threading
from pathlib import Path

from .versions import Versions


def load_reward_model(path: Path, base: Path | None = None):
    """(model, tokenizer) in eval mode from a `train("reward", ...)` folder; a LoRA adapter is merged into its
    base (the one recorded in the adapter, unless `base` is given) so scoring runs one plain model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (path / "adapter_config.json").exists():
        from peft import PeftConfig, PeftModel

        base = base or PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def score(model, tokenizer, prompts: list[list[dict]], replies: list[str], batch_size: int = 8) -> list[float]:
    """The reward of each reply to its prompt, tokenized exactly as trl's RewardTrainer did in training."""
    import torch

    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
    ids = [tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=True,
                                        return_dict=True)["input_ids"] for prompt, reply in zip(prompts, replies)]
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = tokenizer.pad({"input_ids": ids[start:start + batch_size]}, return_tensors="pt")
            scores.extend(model(**batch.to(model.device)).logits[:, 0].float().tolist())
    return scores


def load_version(versions: Versions, version: str):
    """(model, tokenizer) of a reward version, its LoRA merged into this home's copy of its base model."""
    card = versions.card(version)
    if card.kind != "reward":
        raise ValueError(f"version {version!r} is a {card.kind}, not a reward model")
    base = versions.weights(card.base)[0] if card.base else None
    return load_reward_model(versions.folder(version), base)


class RewardScorer:
    """The home's serving reward model, reloaded when ops promote another one."""

    def __init__(self, versions: Versions):
        self.versions = versions
        self._loaded: tuple[str, object, object] | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        return bool(self.versions.serving_version("reward"))

    def __call__(self, prompts: list[list[dict]], replies: list[str]) -> list[float]:
        version = self.versions.serving_version("reward")
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                self._loaded = (version, *load_version(self.versions, version))
            _, model, tokenizer = self._loaded
            return score(model, tokenizer, prompts, replies)
