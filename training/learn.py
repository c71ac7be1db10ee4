"""`supportbot learn`: the nightly loop in one command.

Refresh the suggestions from the log and apply the kinds `learn.auto_accept` allows (the knowledge layer,
seconds), and refit the hand-off threshold from agents' and customers' verdicts (training/thresholds.py); then, when agents have written at least `learn.min_new_replies` replies since the last run, train
the language model (SFT on agents' approved and edited replies, continuing from the serving version) and the
retriever, each behind its gate, promoting what passes. The report (JSON, Markdown and a chart per trained
role) goes to `<home>/learn/<time>/`; the log position the run read up to goes to `<home>/learn/state.json`,
written last, so a run killed midway is simply run again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from chatbot import Config, SupportBot
from chatbot.versions import VersionError, write_json

from .gate import heldout_pairs, plot_comparison, promote, reward_accuracy
from .runs import RunRequest, TrainError, run_training
from .suggestions import auto_accept, refresh
from .thresholds import refit as refit_handoff
from .trainers import TrainSettings

Progress = Callable[[str, int, int], None]


@dataclass
class LearnReport:
    at: str
    new_suggestions: list[int] = field(default_factory=list)
    auto_accepted: list[int] = field(default_factory=list)
    open_suggestions: dict[str, int] = field(default_factory=dict)  # by kind, waiting for review
    new_replies: int = 0  # agents' approved and edited replies since the last run
    reward: dict = field(default_factory=dict)  # the serving reward model on held-out pairs: version, pair_accuracy, pairs; or skipped
    handoff: dict = field(default_factory=dict)  # answer.handoff_confidence refitted from outcomes (training/thresholds.py)
    trained: list[dict] = field(default_factory=list)  # per role: version, passed, promoted, rows; or skipped: why
    seconds: float = 0.0
    report: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        lines = [f"# Learning run {self.at}", "",
                 f"- new suggestions: {len(self.new_suggestions)}; applied without review: {len(self.auto_accepted)}",
                 f"- waiting for review: {', '.join(f'{n} {k}' for k, n in self.open_suggestions.items()) or 'none'}",
                 f"- agents' approved and edited replies since the last run: {self.new_replies}"]
        refit = self.handoff
        if refit.get("applied"):
            lines.append(f"- hand-off threshold: {refit['current']} -> {refit['proposed']} (held-out: hand-off precision "
                         f"{refit['precision']}, right decisions {refit['right_before']} -> {refit['right']}; {refit['outcomes']} outcomes)")
        elif refit.get("proposed") is not None:
            lines.append(f"- hand-off threshold: stays {refit['current']}; the outcomes ask for {refit['proposed']} ({refit['why']})")
        elif refit:
            lines.append(f"- hand-off threshold: stays {refit['current']} ({refit['why']})")
        if "pair_accuracy" in self.reward:
            lines.append(f"- reward model {self.reward['version']}: ranks {self.reward['pair_accuracy']:.0%} of {self.reward['pairs']} "
                         "held-out preference pairs right (50% is chance)")
        elif self.reward:
            lines.append(f"- reward model: not measured ({self.reward['skipped']})")
        for run in self.trained:
            if "skipped" in run:
                lines.append(f"- {run['role']}: not trained ({run['skipped']})")
            else:
                lines.append(f"- {run['role']}: trained {run['version']}, gate {'passed' if run['passed'] else 'refused'}, "
                             f"{'promoted' if run['promoted'] else 'not promoted'}")
                lines += [f"  - {r['metric']}: {r['serving']} -> {r['candidate']}" for r in run.get("rows", [])]
                lines.append(f"\n  ![{run['role']}: held-out numbers before and after]({run['role']}.png)\n")
        return "\n".join(lines + [f"\n{self.seconds:.0f} s"]) + "\n"


def learn(config: Config, train: bool = True, progress: Progress | None = None,
          log: Callable[[str], None] | None = None) -> LearnReport:
    started = time.perf_counter()
    report = LearnReport(at=time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    state_file = config.home / "learn" / "state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    bot = SupportBot(config)
    try:
        report.new_suggestions = refresh(bot, config.learn)
        report.auto_accepted = auto_accept(bot, config.learn)
        report.open_suggestions = dict(Counter(s["kind"] for s in bot.log.suggestions("open")))
        actions = bot.log.agent_actions()
        report.reward = _reward_check(config, bot)
        report.handoff = refit_handoff(config, bot.log).to_json()
    finally:
        bot.log.close()
    last_action = max((a["id"] for a in actions), default=0)
    report.new_replies = sum(a["id"] > state.get("agent_action", 0) and a["action"] in ("approved", "edited") for a in actions)
    if train:
        report.trained = _train(config, report.new_replies, progress, log)
    report.seconds = round(time.perf_counter() - started, 1)
    folder = config.home / "learn" / report.at
    report.report = str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report.to_json())
    (folder / "report.md").write_text(report.markdown(), encoding="utf-8")
    for run in report.trained:  # a chart per trained role: the serving version's held-out numbers against the new one's
        if "rows" in run:
            plot_comparison(run["rows"], run["serving"] or "none", run["version"],
                            f"{run['role']}: {'promoted' if run['promoted'] else 'refused'}", folder / f"{run['role']}.png")
    write_json(state_file, {"agent_action": last_action, "at": report.at, "finished": datetime.now(timezone.utc).isoformat()})
    return report


def _reward_check(config: Config, bot: SupportBot) -> dict:
    """Whether the reward module earns its place: the serving reward model's share of held-out preference pairs
    (agents' replies against the drafts they replaced, rated replies) it ranks the right way round."""
    serving = bot.versions.serving_version("reward")
    if not serving:
        return {"skipped": "no reward model serves (`supportbot train reward`, then `models promote`)"}
    pairs = heldout_pairs(config, bot)
    if not pairs:
        return {"version": serving, "skipped": "no held-out preference pairs in the log yet"}
    return {"version": serving, **reward_accuracy(bot.versions, serving, pairs)}


def _train(config: Config, new_replies: int, progress: Progress | None, log) -> list[dict]:
    """SFT and the retriever from the log, each promoted only through its gate."""
    unknown = set(config.learn.roles) - {"lm", "retriever"}
    if unknown:
        raise TrainError(f"learn.roles: {', '.join(sorted(unknown))}: expected lm and/or retriever")
    if new_replies < config.learn.min_new_replies:
        why = f"{new_replies} new agent replies, fewer than learn.min_new_replies ({config.learn.min_new_replies})"
        return [{"role": role, "skipped": why} for role in config.learn.roles]
    from .retriever import RetrieverSettings, run_retriever

    settings = TrainSettings(epochs=config.learn.epochs, max_steps=config.learn.max_steps)
    trainers = {"lm": lambda: run_training(config, RunRequest("sft", settings, kb_seed=False), progress, log),
                "retriever": lambda: run_retriever(config, RetrieverSettings(max_steps=config.learn.max_steps), progress=progress, log=log)}
    runs = []
    for role, trainer in ((role, trainers[role]) for role in config.learn.roles):
        try:
            runs.append(_promoted(role, promote(config, trainer().version, progress=progress)))
        except (TrainError, VersionError) as err:  # nothing to train on, or nothing to judge it by
            runs.append({"role": role, "skipped": str(err)})
    return runs


def _promoted(role: str, result) -> dict:
    return {"role": role, "version": result.candidate, "serving": result.serving, "passed": result.passed, "promoted": result.promoted,
            "rows": [{k: r[k] for k in ("metric", "serving", "candidate")} for r in result.rows]}
