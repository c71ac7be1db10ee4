"""Out-of-scope guard benchmark: what it catches on data/eval/answers.csv, and what it costs a turn.

1. Decisions. Every question of data/eval/answers.csv goes through `SupportBot.ask` in `template` mode (the
   guard decides before any model runs; only questions a document answers reach the LM, for 8 tokens) with
   the guard fitted at each `--false-alarms` share. Reported: out-of-scope questions that got past the
   confidence check, how many of them the guard hands off, and answerable questions it hands off.
2. Cost. `ask()` on the answerable questions, guard on and off alternated question by question (the order
   swapped every other question) in one process, with the knowledge base's remembered query vectors cleared
   before each call, so every turn embeds its message once: p50 and the ratio.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scope.py [--false-alarms 0.003 0.005 0.01]

The table goes to stdout, the numbers to bench/results/scope.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot import SupportBot, load_config  # noqa: E402
from chatbot.evaluate import load_answer_rows  # noqa: E402
from chatbot.scope import ScopeGuard  # noqa: E402


def decisions(bot: SupportBot, rows: list[dict], share: float) -> dict:
    """Out-of-scope questions past the confidence check (answered, or handed off by the guard), those the
    guard handed off, and answerable questions it handed off."""
    bot.scope = ScopeGuard(replace(bot.settings, scope_false_alarms=share))  # fitted for this share
    caught, lost, passed = [], [], 0
    for row in rows:
        reply = bot.ask(row["question"])
        if reply.reason == "out_of_scope":
            (lost if row["answer"] else caught).append(row["question"])
        passed += not row["answer"] and (reply.reason == "out_of_scope" or reply.mode != "policy")
    return {"share": share, "out_of_scope_past_confidence": passed, "caught": caught, "answerable_lost": lost}


def turn_cost(bot: SupportBot, questions: list[str], share: float) -> dict:
    """Median ask() with the guard (fitted for `share`) and without it: setting the share to 0 turns it off."""
    bot.scope = ScopeGuard(replace(bot.settings, scope_false_alarms=share))
    bot.scope.model(bot.kb)
    times: dict[float, list[float]] = {share: [], 0.0: []}
    for i, question in enumerate(questions):
        for setting in ((share, 0.0) if i % 2 else (0.0, share)):
            bot.scope.false_alarms = setting
            bot.kb._recent.clear()  # a fresh question: its searches embed it once
            started = time.perf_counter()
            bot.ask(question)
            times[setting].append((time.perf_counter() - started) * 1000)
    on, off = statistics.median(times[share]), statistics.median(times[0.0])
    return {"questions": len(questions), "p50_ms_guard_on": round(on, 2), "p50_ms_guard_off": round(off, 2), "ratio": round(on / off, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--false-alarms", type=float, nargs="+", default=[0.003, 0.005, 0.01])
    args = parser.parse_args()
    rows = load_answer_rows(ROOT / "data" / "eval" / "answers.csv")
    with tempfile.TemporaryDirectory(prefix="supportbot-scope-") as home:
        bot = SupportBot(load_config(Path(home), ["answer.mode=template", "model.max_new_tokens=8"], env={}))
        bot.kb.add([ROOT / "data" / "kb"])
        found = [decisions(bot, rows, share) for share in args.false_alarms]
        cost = turn_cost(bot, [r["question"] for r in rows if r["answer"]], args.false_alarms[0])
        bot.log.close()
        bot.kb.close()
    print(f"data/eval/answers.csv: {sum(bool(r['answer']) for r in rows)} answerable, {sum(not r['answer'] for r in rows)} out of scope")
    print(f"{'scope_false_alarms':>18}  {'out-of-scope past confidence':>28}  {'caught by guard':>15}  {'answerable lost':>15}")
    for f in found:
        print(f"{f['share']:>18}  {f['out_of_scope_past_confidence']:>28}  {len(f['caught']):>15}  {len(f['answerable_lost']):>15}")
        for question in f["caught"]:
            print(f"{'':>20}caught: {question}")
        for question in f["answerable_lost"]:
            print(f"{'':>20}lost:   {question}")
    print(f"ask() p50 over {cost['questions']} answerable questions: guard on {cost['p50_ms_guard_on']} ms, "
          f"off {cost['p50_ms_guard_off']} ms ({cost['ratio']}x)")
    out = ROOT / "bench" / "results" / "scope.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"decisions": found, "cost": cost}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
