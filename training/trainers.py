"""Fine-tuning with trl: the one place that knows trl's trainers, their configs and dataset formats.

Every method goes through `train`, which differs per method only by a row of `METHODS` and a few config
values, so SFT, KTO, DPO, reward modelling and GRPO share one path for loading, LoRA, logging and saving.
The configs are CPU-safe (no bf16, no gradient checkpointing) yet free of device assumptions, so the same
call runs on GPUs under `accelerate launch`.

Examples longer than `TrainSettings.max_length` tokens are dropped, not truncated: cutting a support
prompt would lose the passages or the question the reply rests on, and trl would cut the reply itself.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # trl reports each trainer start to the Hub otherwise

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]

# Logged next to the loss when present: preference accuracy and margins (DPO/KTO, reward), GRPO's mean reward.
EXTRA_LOG_KEYS = ("rewards/accuracies", "rewards/margins", "accuracy", "margin", "reward")


@dataclass
class TrainSettings:
    """Plain values with defaults (nanoGPT style); the CLI maps flags onto these."""

    epochs: float = 1.0
    max_steps: int = -1  # >0 overrides epochs
    learning_rate: float = 2e-4  # LoRA default; full fine-tune callers pass smaller
    batch_size: int = 4  # GRPO: completions per device step, a multiple of num_generations (with grad_accum)
    grad_accum: int = 1
    lora: bool = True  # False = full fine-tune
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # LoRA on the top N transformer layers only (0 = all): the backward pass then stops N layers down, which
    # on a CPU roughly halves a step for N = a quarter of the layers (measured in README).
    lora_layers: int = 0
    max_length: int = 1024  # tokens of prompt+completion (GRPO: prompt+max_completion_length); longer rows dropped
    beta: float = 0.1  # DPO/KTO beta
    num_generations: int = 4  # GRPO
    max_completion_length: int = 64  # GRPO
    seed: int = 0
    threads: int = 0  # torch threads (0 = leave default)
    # SFT only: passages computed apart, as the llama.cpp passage cache serves them (training/block_attention.py)
    block_attention: bool = False
    logging_steps: int = 1


class Method(NamedTuple):
    trainer: str  # trl class names, looked up lazily: importing trl takes seconds
    config: str
    keys: tuple[str, ...]  # what each row must have; only these reach trl (GRPO passes every key on)
    replies: tuple[str, ...]  # keys holding assistant messages that follow the prompt (for the length limit)
    reference: bool  # the loss compares against a frozen reference policy


METHODS: dict[str, Method] = {
    "sft": Method("SFTTrainer", "SFTConfig", ("prompt", "completion"), ("completion",), False),
    "kto": Method("KTOTrainer", "KTOConfig", ("prompt", "completion", "label"), ("completion",), True),
    "dpo": Method("DPOTrainer", "DPOConfig", ("prompt", "chosen", "rejected"), ("chosen", "rejected"), True),
    "reward": Method("RewardTrainer", "RewardConfig", ("prompt", "chosen", "rejected"), ("chosen", "rejected"), False),
    "grpo": Method("GRPOTrainer", "GRPOConfig", ("prompt",), (), False),
}


def train(method: str, base: Path, train_rows: list[dict], out_dir: Path, settings: TrainSettings,
          start_adapter: Path | None = None, reward_model: Path | None = None,
          reward_funcs: list[Callable] | None = None,
          progress: Progress | None = None,
          log: Log | None = None) -> dict:
    """Train `base` (plus `start_adapter`) with one trl method and save a LoRA adapter or a full model to `out_dir`.

    Returns the run's metrics: train_loss, steps, examples, dropped (over max_length), seconds,
    trainable_params and the last value of every float trl logged.
    """
    started = time.monotonic()
    spec = _check(method, train_rows, reward_model, reward_funcs)
    if settings.block_attention:
        if method != "sft":
            raise ValueError(f"{method}: block attention is for sft only")
        from .block_attention import train_block_sft

        return train_block_sft(base, train_rows, out_dir, settings, start_adapter, progress, log)

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, set_seed

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [_trl_row(method, spec, row) for row in train_rows if _fits(tokenizer, spec, row, settings)]
    if not rows:
        raise ValueError(f"{method}: no training row fits max_length={settings.max_length} tokens")
    _check_labels(method, rows)

    set_seed(settings.seed)  # before loading: LoRA and a reward model's score head start random
    model = _load_model(method, base, tokenizer, start_adapter, settings.lora)
    extra: dict = {}
    if settings.lora and start_adapter is None:
        extra["peft_config"] = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                          lora_dropout=settings.lora_dropout, **_lora_targets(model, settings.lora_layers),
                                          task_type="SEQ_CLS" if method == "reward" else "CAUSAL_LM")
    if spec.reference and not settings.lora:
        # The starting policy itself; without it trl would reload the bare base from config._name_or_path.
        extra["ref_model"] = copy.deepcopy(model).eval().requires_grad_(False)
    if method == "grpo":
        extra["reward_funcs"] = list(reward_funcs or []) + ([_reward_model_func(reward_model)] if reward_model else [])

    config = getattr(trl, spec.config)(
        output_dir=str(out_dir),  # trl writes only TensorBoard events there: out_dir/runs/<date>_<host>/
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        seed=settings.seed, logging_steps=settings.logging_steps, report_to=["tensorboard"], save_strategy="no",
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
        activation_checkpointing=False,  # transformers 5 name; trl's gradient_checkpointing=True default follows it
        dataloader_num_workers=0, disable_tqdm=True, **_method_config(method, rows, settings))
    reporter = _reporter(method, progress, log)
    trainer = getattr(trl, spec.trainer)(
        model=model, args=config, processing_class=tokenizer, callbacks=[reporter],
        # Shuffled once here because KTO reads the data in order (its KL term pairs neighbours in a batch).
        train_dataset=Dataset.from_list(rows).shuffle(seed=settings.seed), **extra)
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log dict; `log` reports instead
    result = trainer.train()
    _save(trainer, tokenizer, out_dir)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {**reporter.metrics, "train_loss": result.training_loss, "steps": trainer.state.global_step,
            "examples": len(train_rows), "dropped": len(train_rows) - len(rows),
            "seconds": time.monotonic() - started, "trainable_params": trainable}


def _check(method: str, rows: list[dict], reward_model: Path | None, reward_funcs: list[Callable] | None) -> Method:
    """Reject bad input with one line before anything slow is loaded."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r} (known: {', '.join(METHODS)})")
    if not rows:
        raise ValueError(f"{method}: no training rows")
    spec = METHODS[method]
    for index, row in enumerate(rows):
        for key in spec.keys:
            if key not in row:
                raise ValueError(f"{method}: row {index} has no {key!r}")
    if method == "grpo" and not (reward_funcs or reward_model):
        raise ValueError("grpo: needs reward_funcs or a reward_model")
    return spec


def _check_labels(method: str, rows: list[dict]) -> None:
    """KTO learns from the contrast of good and bad replies: one kind alone gives it nothing to learn."""
    if method == "kto" and len({bool(row["label"]) for row in rows}) < 2:
        raise ValueError("kto: needs both desirable (label true) and undesirable (label false) rows")


def _trl_row(method: str, spec: Method, row: dict) -> dict:
    """The row as trl takes it: bookkeeping keys dropped, except for GRPO, whose reward functions get them all."""
    return dict(row) if method == "grpo" else {key: row[key] for key in spec.keys}


def _fits(tokenizer, spec: Method, row: dict, settings: TrainSettings) -> bool:
    """Whether every sequence trl builds from the row stays within max_length tokens."""
    def length(messages: list[dict], **kwargs) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])

    if not spec.replies:  # GRPO: the prompt plus the longest completion it may generate
        return length(row["prompt"], add_generation_prompt=True) + settings.max_completion_length <= settings.max_length
    return all(length(row["prompt"] + row[key]) <= settings.max_length for key in spec.replies)


def _method_config(method: str, rows: list[dict], settings: TrainSettings) -> dict:
    """The config values that exist only for some methods."""
    if method == "grpo":
        return {"num_generations": settings.num_generations, "max_completion_length": settings.max_completion_length}
    values: dict = {"max_length": settings.max_length}
    if method == "sft":  # batches of similar lengths waste less compute on padding
        values["train_sampling_strategy"] = "group_by_length"
    if method in ("dpo", "kto"):
        values["beta"] = settings.beta
    if method == "kto":
        # KTO expects a 1:1 balance of desirable and undesirable rows; reweight the bad ones to reach it.
        desirable = sum(bool(row["label"]) for row in rows)
        values["undesirable_weight"] = desirable / (len(rows) - desirable)
    return values


def _lora_targets(model, top_layers: int) -> dict:
    """LoRA's target modules: every linear layer, or those of the top `top_layers` transformer blocks."""
    if top_layers <= 0:
        return {"target_modules": "all-linear"}
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and ".layers." in name}
    count = model.config.num_hidden_layers
    return {"target_modules": sorted(names), "layers_to_transform": list(range(max(0, count - top_layers), count))}


def _load_model(method: str, base: Path, tokenizer, start_adapter: Path | None, lora: bool):
    """The starting policy in float32: base plus start_adapter, trainable as LoRA or merged for a full fine-tune."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    # An absolute base path is what the saved adapter records as its base model.
    if method == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(Path(base).resolve(), num_labels=1,
                                                                   dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    else:
        model = AutoModelForCausalLM.from_pretrained(Path(base).resolve(), dtype=torch.float32)
    if start_adapter is None:
        return model
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(start_adapter), is_trainable=lora)
    return model if lora else model.merge_and_unload().requires_grad_(True)  # peft froze the base weights


def _reporter(method: str, progress: Progress | None, log: Log | None):
    """A callback relaying trl's steps and logs to the caller and keeping the last value of each float metric."""
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        def __init__(self) -> None:
            self.metrics: dict[str, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            if progress:
                progress(f"train {method}", 0, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if progress:
                progress(f"train {method}", state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            self.metrics.update({key: value for key, value in logs.items() if isinstance(value, float)})
            if log and "loss" in logs:
                shown = "".join(f" {key} {logs[key]:.4f}" for key in EXTRA_LOG_KEYS if key in logs)
                log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}{shown}")

    return Reporter()


def _save(trainer, tokenizer, out_dir: Path) -> None:
    """Only the adapter (or full model) and the tokenizer, next to the TensorBoard runs/ folder."""
    from peft import PeftModel

    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        # DPO/KTO/GRPO may have added a frozen "ref" copy of a start adapter; it is not part of the result.
        model.save_pretrained(out_dir, selected_adapters=["default"])
        (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's model card
    else:
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _reward_model_func(path: Path) -> Callable:
    """A GRPO reward function (trl's signature) scoring completions with a trained reward model."""
    from accelerate import PartialState

    from chatbot.reward import load_reward_model, score

    model, tokenizer = load_reward_model(path)
    model.to(PartialState().device)  # this process's device, under accelerate launch too

    def reward_model(prompts: list, completions: list, **kwargs) -> list[float]:
        return score(model, tokenizer, prompts, [completion[-1]["content"] for completion in completions])

    return reward_model
