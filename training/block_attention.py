"""Supervised fine-tuning with block attention: the model learns to answer from passages computed apart, the
way the llama.cpp passage cache serves them (chatbot/passage_cache.py, docs/serving.md#passage-cache).

A model trained on whole prompts has never seen passages that cannot see each other, and answers far worse
from them. Here every training prompt is computed as the cache computes it, in three forward passes whose
gradients all reach the LoRA weights:

1. the context (the system prompt and the message's lead-in), once;
2. every passage block after that context, as one batch of rows;
3. the rest of the prompt (the conversation before the passages, the question, the glue) and the reply,
   attending to the blocks' keys turned by RoPE to where the prompt has them (a 4D attention mask).

The loss is the cross-entropy of the reply's tokens, as trl's SFT computes it on prompt/completion rows. trl's
trainer cannot pass a prompt in three parts, so this is a plain loop (AdamW, linear decay, batches of
`batch_size` rows) over the same LoRA adapter `trainers.train` builds; it saves the same files.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from chatbot.passage_cache import block_ranges
from chatbot.prompt import pieces_in

from .trainers import Log, Progress, TrainSettings, _load_model, _lora_targets


@dataclass
class Example:
    ids: list[int]  # prompt and reply
    reply: int  # where the reply's tokens start
    context: list[int]  # what every block is computed after ([] for a prompt without passages)
    blocks: list[tuple[int, int]]


def encode(tokenizer, row: dict) -> Example:
    """A prompt/completion row as token ids, with its passages' blocks cut as the serving cache cuts them."""
    prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = list(tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_dict=True)["input_ids"])
    pieces = pieces_in(row["prompt"][-1]["content"], row.get("passages", []))
    context, blocks = block_ranges(tokenizer, row["prompt"], ids, pieces) if pieces else ([], [])
    return Example(ids, len(prompt), context, blocks)


def turn(keys, delta: int, inv_freq):
    """Keys (batch, heads, tokens, dims; transformers' rotate-half layout) as if computed `delta` positions later."""
    import torch
    from transformers.models.llama.modeling_llama import rotate_half

    angle = torch.cat([delta * inv_freq] * 2).to(keys.dtype)
    return keys * angle.cos() + rotate_half(keys) * angle.sin()


def reply_logits(model, example: Example):
    """Logits for each of the reply's tokens (the rows that predict them), the prompt computed as served."""
    import torch
    from transformers import DynamicCache

    ids, (start, _), end = example.ids, example.blocks[0], example.blocks[-1][1]
    context = torch.tensor([example.context])
    width = len(example.context)
    first = model(input_ids=context, use_cache=True).past_key_values
    sizes = [b - a for a, b in example.blocks]
    longest = max(sizes)
    rows = torch.tensor([ids[a:b] + [ids[b - 1]] * (longest - (b - a)) for a, b in example.blocks])
    allowed = torch.ones(len(sizes), 1, longest, width + longest, dtype=torch.bool)
    allowed[:, :, :, width:] = torch.tril(torch.ones(longest, longest, dtype=torch.bool))
    shared = DynamicCache([(layer.keys.expand(len(sizes), -1, -1, -1), layer.values.expand(len(sizes), -1, -1, -1))
                           for layer in first.layers])
    second = model(input_ids=rows, position_ids=torch.arange(width, width + longest).expand(len(sizes), -1),
                   attention_mask=allowed, cache=shared, use_cache=True).past_key_values
    inv_freq = model.get_base_model().model.rotary_emb.inv_freq if hasattr(model, "get_base_model") else model.model.rotary_emb.inv_freq
    placed = []
    for layer in second.layers:
        keys = [turn(layer.keys[k:k + 1, :, width:width + n], a - width, inv_freq) for k, ((a, _), n) in enumerate(zip(example.blocks, sizes))]
        values = [layer.values[k:k + 1, :, width:width + n] for k, n in enumerate(sizes)]
        placed.append((torch.cat(keys, dim=2), torch.cat(values, dim=2)))
    rest = ids[:start] + ids[end:]
    positions = list(range(start)) + list(range(end, len(ids)))
    past = sum(sizes)
    allowed = torch.zeros(1, 1, len(rest), past + len(rest), dtype=torch.bool)
    allowed[0, 0, :, past:] = torch.tril(torch.ones(len(rest), len(rest), dtype=torch.bool))
    allowed[0, 0, start:, :past] = True  # after the passages: every block
    logits = model(input_ids=torch.tensor([rest]), position_ids=torch.tensor([positions]), attention_mask=allowed,
                   cache=DynamicCache(placed), use_cache=True).logits[0]
    return logits[start + example.reply - 1 - end:-1]


def example_loss(model, example: Example):
    """Summed cross-entropy of the reply's tokens (so that a batch averages over its tokens, as trl does)."""
    import torch
    import torch.nn.functional as F

    targets = torch.tensor(example.ids[example.reply:])
    if example.blocks:
        logits = reply_logits(model, example)
    else:
        logits = model(input_ids=torch.tensor([example.ids])).logits[0, example.reply - 1:-1]
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)


def train_block_sft(base: Path, rows: list[dict], out_dir: Path, settings: TrainSettings, start_adapter: Path | None = None,
                    progress: Progress | None = None, log: Log | None = None) -> dict:
    """`trainers.train("sft", ...)` with block attention: the same LoRA, rows, limits and saved files."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, set_seed

    started = time.monotonic()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = [e for e in (encode(tokenizer, row) for row in rows) if len(e.ids) <= settings.max_length]
    if not examples:
        raise ValueError(f"sft: no training row fits max_length={settings.max_length} tokens")
    set_seed(settings.seed)
    model = _load_model("sft", base, tokenizer, start_adapter, settings.lora)
    if settings.lora and start_adapter is None:
        model = get_peft_model(model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                                                 task_type="CAUSAL_LM", **_lora_targets(model, settings.lora_layers)))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    steps = settings.max_steps if settings.max_steps > 0 else math.ceil(per_epoch * settings.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    order, rng, losses = [], random.Random(settings.seed), []
    for step in range(steps):
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = [examples[i] for i in order[:settings.batch_size]], order[settings.batch_size:]
        total = sum(len(e.ids) - e.reply for e in batch)
        optimizer.zero_grad()
        summed = 0.0
        for example in batch:
            loss, _ = example_loss(model, example)
            (loss / total).backward()
            summed += loss.item()
        optimizer.step()
        schedule.step()
        losses.append(summed / total)
        if progress:
            progress("train sft (block attention)", step + 1, steps)
        if log and (step + 1) % settings.logging_steps == 0:
            log(f"step {step + 1}/{steps} loss {losses[-1]:.4f}")
    model.save_pretrained(out_dir)
    (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's model card
    tokenizer.save_pretrained(out_dir)
    blocked = sum(bool(e.blocks) for e in examples)
    return {"loss": losses[-1], "train_loss": sum(losses) / len(losses), "steps": steps, "examples": len(rows),
            "dropped": len(rows) - len(examples), "blocked_examples": blocked, "seconds": time.monotonic() - started,
            "trainable_params": sum(p.numel() for p in trainable)}
