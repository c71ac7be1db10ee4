"""A training run, top to bottom: pick the examples, start from the serving version, train, and write the
result as a new version. The version folder appears whole (renamed from `.partial` once its card is in) or
not at all, so a crash mid-run leaves the versions and the serving model as they were."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatbot import Config, SupportBot
from chatbot.evaluate import load_answer_rows
from chatbot.grounding import grounding
from chatbot.scope import OUT_OF_SCOPE, read_questions
from chatbot.versions import Card, Versions, now, open_versions
from retrieval import EvalFileError

from .examples import data_hash, deduplicate, log_examples, read_jsonl, redact_row, seed_examples, split, worked_examples
from .trainers import TrainSettings, train

METHODS = ("sft", "kto", "dpo", "reward", "grpo")
# Sensible learning rates per method for LoRA (full fine-tunes divide by 10).
LEARNING_RATES = {"sft": 2e-4, "kto": 5e-5, "dpo": 5e-5, "reward": 1e-4, "grpo": 1e-5}


class TrainError(ValueError):
    """A run refused before it started (no examples, bad data file); one line."""


@dataclass
class RunRequest:
    method: str
    settings: TrainSettings = field(default_factory=TrainSettings)
    data: list[str] = field(default_factory=list)  # JSONL files; none = the log (and, for sft/grpo, the KB seed)
    parent: str = ""  # version to continue from; "" = the serving one
    kb_seed: bool = True  # sft/grpo: add examples made from the knowledge base
    seed_variants: int = 0  # question variants per entry in the KB seed (0 = all)
    out_of_scope: str | None = None  # file of questions the KB seed teaches to hand off (None = bundled, "" = none)
    worked: str = ""  # sft/grpo: CSV (question,answer,expected_id) of answers that reason over one entry


def examples_for(config: Config, bot: SupportBot, request: RunRequest,
                 progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """The training rows of a run: the given files, else the log's train split (redacted, de-duplicated),
    plus the knowledge-base seed for methods that learn from (prompt, answer) examples."""
    if request.data:
        rows = []
        for path in request.data:
            if not Path(path).exists():
                raise TrainError(f"{path}: no such file")
            try:
                rows += read_jsonl(Path(path))
            except ValueError as err:
                raise TrainError(str(err)) from None
        return rows
    kind = "sft" if request.method == "grpo" else request.method
    logged = deduplicate([redact_row(r, bot.log.redact_kinds) for r in log_examples(bot, progress)[kind]])
    rows, _ = split(logged, config.gate.heldout_share)
    if request.method in ("sft", "grpo"):
        worked = worked_examples(bot, read_worked(bot, request.worked)) if request.worked else []
        if request.kb_seed:
            try:
                path = OUT_OF_SCOPE if request.out_of_scope is None else request.out_of_scope
                questions = read_questions(Path(path)) if path else []
            except ValueError as err:
                raise TrainError(str(err)) from None
            rows += seed_examples(bot, max_variants=request.seed_variants, out_of_scope=questions,
                                  also_answered=len(worked), progress=progress)
        rows += worked
    if not rows:
        raise TrainError(f"no {kind} examples yet: "
                         + {"kto": "customers have rated no bot replies", "dpo": "agents have edited no drafts",
                            "reward": "agents have edited no drafts and no disliked reply was answered by an agent"}.get(kind, "the knowledge base is empty"))
    return rows


def read_worked(bot: SupportBot, path: str) -> list[dict]:
    """The worked-example rows of `path`, each answered and naming an entry of the knowledge base."""
    try:
        rows = load_answer_rows(path)
    except EvalFileError as err:
        raise TrainError(str(err)) from None
    for row in rows:
        if not row["answer"] or bot.kb.entry(row["expected_id"]) is None:
            raise TrainError(f"{path}: line {row['line']}: needs an answer and the expected_id of an entry in the knowledge base")
    return rows


def grounding_reward(completions: list, passages: list[list[str]], **_) -> list[float]:
    """GRPO reward: how much of the reply the passages support, plus a bonus for citing one."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [grounding(t, p) + (0.2 if "[" in t else 0.0) for t, p in zip(texts, passages)]


def new_version_name(versions: Versions, method: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name, n = f"{method}-{stamp}", 1
    while versions.folder(name).exists() or versions.folder(name + ".partial").exists():
        n += 1
        name = f"{method}-{stamp}-{n}"
    return name


def run_training(config: Config, request: RunRequest, progress: Callable[[str, int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> Card:
    """Train and register a new version (not promoted: `promote` runs the gate)."""
    if request.method not in METHODS:
        raise TrainError(f"unknown method {request.method!r}: expected one of {', '.join(METHODS)}")
    with open_versions(config) as versions:
        return _run_training(config, versions, request, progress, log)


def _run_training(config: Config, versions: Versions, request: RunRequest, progress: Callable[[str, int, int], None] | None,
                  log: Callable[[str], None] | None) -> Card:
    versions.ensure_base(config.model.path, progress)
    bot = SupportBot(config, versions=versions)
    try:
        rows = examples_for(config, bot, request, progress)
    finally:
        bot.log.close()
    del bot  # its copy of the model is not needed while training

    parent = request.parent or versions.serving_version("lm")
    base_path, start_adapter = versions.weights(parent)
    base_version = versions.root_of(parent)  # adapters always apply to the plain base model
    reward_version = versions.serving_version("reward")
    if request.method == "reward":  # a reward model starts from the plain base LM
        start_adapter = None
    reward_path = versions.folder(reward_version) if reward_version and request.method == "grpo" else None

    version = new_version_name(versions, request.method)
    partial = versions.start_partial(version)
    try:
        metrics = train(request.method, base_path, rows, partial, request.settings, start_adapter=start_adapter,
                        reward_model=reward_path, reward_funcs=[grounding_reward] if request.method == "grpo" else None,
                        progress=progress, log=log)
        kind = "reward" if request.method == "reward" else "adapter" if request.settings.lora else "lm"
        card = Card(version, kind, parent=parent if request.method != "reward" else "",
                    base=base_version if kind in ("adapter", "reward") else "", method=request.method,
                    data_hash=data_hash(rows), settings=asdict(request.settings),
                    metrics={"train": metrics}, created=now())
        versions.finish_partial(card)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return card
