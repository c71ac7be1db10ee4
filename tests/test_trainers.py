"""trl training on the tiny random Llama: every method takes two steps, changes its trainable weights, logs to
TensorBoard, reports progress and saves a folder that loads; continuing from an adapter, full fine-tuning, and
bad input."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from chatbot.reward import load_reward_model, score
from training.trainers import TrainSettings, train

STEPS = 2
TINY = TrainSettings(max_steps=STEPS, batch_size=2, learning_rate=1e-3, num_generations=2, max_completion_length=6,
                     max_length=256)
LM_FILES = {"adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json",
            "tokenizer_config.json", "runs"}


def prompt(i: int) -> list[dict]:
    return [{"role": "system", "content": "You answer shop questions."}, {"role": "user", "content": f"Question {i}?"}]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def rows(method: str, n: int = 4) -> list[dict]:
    """n rows in the method's format, with the bookkeeping keys exported rows carry."""
    def row(i: int) -> dict:
        if method == "sft":
            return {"prompt": prompt(i), "completion": reply(f"Answer {i}.")}
        if method == "kto":
            return {"prompt": prompt(i), "completion": reply(f"Answer {i}."), "label": i % 2 == 0}
        if method in ("dpo", "reward"):
            return {"prompt": prompt(i), "chosen": reply(f"Good answer {i}."), "rejected": reply(f"Bad {i}.")}
        return {"prompt": prompt(i), "passages": [f"passage {i}"]}

    return [{**row(i), "conversation_id": f"c{i}", "source": "test"} for i in range(n)]


class Recorder:
    """Collects what train() reports through progress and log."""

    def __init__(self) -> None:
        self.progress: list[tuple[str, int, int]] = []
        self.lines: list[str] = []

    def run(self, method: str, base: Path, out: Path, settings: TrainSettings = TINY, **kwargs) -> dict:
        return train(method, base, rows(method), out, settings,
                     progress=lambda *a: self.progress.append(a), log=self.lines.append, **kwargs)


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (folder / "adapter_config.json").exists() else "model.safetensors"
    return load_file(folder / name)


def check_run(method: str, out: Path, metrics: dict, recorder: Recorder) -> None:
    """What every run must leave: metrics, progress at the last step, log lines, TensorBoard events, trained LoRA."""
    assert metrics["steps"] == STEPS and metrics["examples"] == 4 and metrics["dropped"] == 0
    assert math.isfinite(metrics["train_loss"]) and metrics["trainable_params"] > 0 and metrics["seconds"] > 0
    assert recorder.progress[-1] == (f"train {method}", STEPS, STEPS)
    assert recorder.lines[-1].startswith(f"step {STEPS}/{STEPS} loss ")
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    assert {p.name for p in out.iterdir()} == LM_FILES
    lora_b = [t for name, t in tensors(out).items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: training moved it


@pytest.fixture(scope="module")
def sft_adapter(tiny_lm_path, tmp_path_factory) -> tuple[Path, dict, Recorder]:
    recorder = Recorder()
    out = tmp_path_factory.mktemp("sft") / "adapter"
    return out, recorder.run("sft", tiny_lm_path, out), recorder


@pytest.fixture(scope="module")
def reward_dir(tiny_lm_path, tmp_path_factory) -> tuple[Path, dict, Recorder]:
    recorder = Recorder()
    out = tmp_path_factory.mktemp("reward") / "model"
    return out, recorder.run("reward", tiny_lm_path, out), recorder


def test_sft_trains_a_loadable_adapter(sft_adapter, tiny_lm_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics, recorder = sft_adapter
    check_run("sft", out, metrics, recorder)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_path), str(out))
    ids = AutoTokenizer.from_pretrained(out).apply_chat_template(prompt(0), return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_preference_methods_train_loadable_adapters(method, tiny_lm_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recorder = Recorder()
    metrics = recorder.run(method, tiny_lm_path, tmp_path / "out")
    check_run(method, tmp_path / "out", metrics, recorder)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_path), str(tmp_path / "out"))
    if method == "dpo":
        assert "rewards/accuracies" in recorder.lines[-1] and "rewards/margins" in metrics


def test_reward_model_scores_replies(reward_dir):
    out, metrics, recorder = reward_dir
    check_run("reward", out, metrics, recorder)
    assert any(name.startswith("base_model.model.score") for name in tensors(out))  # the head is saved with LoRA
    model, tokenizer = load_reward_model(out)
    scores = score(model, tokenizer, [prompt(0), prompt(1), prompt(2)], ["Yes.", "No, never.", ""])
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    with pytest.raises(ValueError):
        score(model, tokenizer, [prompt(0)], ["a", "b"])


def test_grpo_with_reward_function_and_reward_model(reward_dir, tiny_lm_path, tmp_path):
    seen: list[list] = []

    def shorter_is_better(prompts, completions, passages, **kwargs) -> list[float]:
        seen.append(passages)  # extra dataset columns reach reward functions
        return [-float(len(c[-1]["content"])) for c in completions]

    recorder = Recorder()
    metrics = recorder.run("grpo", tiny_lm_path, tmp_path / "out", reward_funcs=[shorter_is_better],
                           reward_model=reward_dir[0])
    check_run("grpo", tmp_path / "out", metrics, recorder)
    assert seen and all(p[0].startswith("passage ") for p in seen[0])
    assert "rewards/reward_model/mean" in metrics and "rewards/shorter_is_better/mean" in metrics


def test_continuing_from_an_adapter(sft_adapter, tiny_lm_path, tmp_path):
    start = sft_adapter[0]
    recorder = Recorder()
    recorder.run("dpo", tiny_lm_path, tmp_path / "out", start_adapter=start)
    first = recorder.lines[0]
    # The reference is the starting policy (base + start adapter), so the first DPO loss is exactly log 2.
    assert first.startswith("step 1/2 loss 0.6931"), first
    before, after = tensors(start), tensors(tmp_path / "out")
    assert before.keys() == after.keys()
    assert any(not after[name].equal(before[name]) for name in before)


def test_full_fine_tune_saves_a_plain_model(tiny_lm_path, tmp_path):
    from transformers import AutoModelForCausalLM

    recorder = Recorder()
    metrics = recorder.run("sft", tiny_lm_path, tmp_path / "out", replace(TINY, lora=False))
    assert metrics["steps"] == STEPS and recorder.progress[-1] == ("train sft", STEPS, STEPS)
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    trained, initial = model.state_dict(), tensors(tiny_lm_path)
    assert any(not trained[name].equal(initial[name]) for name in initial)


@pytest.mark.parametrize("method, data, message", [
    ("ppo", rows("sft"), "unknown training method"),
    ("sft", [], "no training rows"),
    ("kto", [r | {"label": True} for r in rows("kto")], "both desirable"),
    ("dpo", rows("dpo")[:2] + [{"prompt": prompt(0), "chosen": reply("x")}], "row 2 has no 'rejected'"),
    ("sft", [{"prompt": prompt(0), "completion": reply("word " * 400)}], "no training row fits max_length=256"),
    ("grpo", rows("grpo"), "needs reward_funcs"),
])
def test_bad_input(method, data, message, tiny_lm_path, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(method, tiny_lm_path, data, tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()
