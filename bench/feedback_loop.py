"""Feedback-loop benchmark: does the model get better from agents' fixes and customers' thumbs?

Protocol (everything through the product's own code, on a fresh home with data/kb):

1. The answerable questions of data/eval/answers.csv are split by position: even rows are traffic, odd
   rows are the held-out test (plus the out-of-scope rows, which should hand off). No test question is
   ever asked during the traffic phase, and the model never sees the test references.
2. Before: the serving model (the committed demo adapter, else the bundled base) answers the test
   questions in "generate" mode: answer similarity, grounding, hand-off precision/recall, latency
   (`training.gate.evaluate_version`, the gate's own measurement).
3. Traffic: the bot answers each traffic question in a logged web conversation. A simulated customer
   rates the reply up when its embedding similarity to the reference is at least `--threshold`, else down;
   a simulated agent approves the good replies and replaces the others with the reference answer.
4. Retrain from the log alone (no KB seed): SFT on the agent-approved and -edited replies, then DPO
   (agent's reply over the bot's draft) and/or KTO (thumbs) continuing from it, LoRA on the top layers.
5. After: the retrained version answers the same test questions; the table shows before and after.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/feedback_loop.py [--traffic 60] [--test 48] [--method dpo]

Results go to bench/results/feedback_loop.json; the table to stdout, progress to stderr. Slow on a CPU
(tens of minutes): run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot import SupportBot, load_config  # noqa: E402
from chatbot.evaluate import load_answer_rows, without_citations  # noqa: E402
from chatbot.versions import Versions  # noqa: E402
from retrieval import KnowledgeBase  # noqa: E402
from training import RunRequest, TrainSettings, run_training  # noqa: E402
from training.gate import METRICS, evaluate_version  # noqa: E402
from ui.progress import TerminalProgress  # noqa: E402


def split_questions(traffic: int, test: int) -> tuple[list[dict], list[dict]]:
    rows = load_answer_rows(ROOT / "data" / "eval" / "answers.csv")
    answerable = [r for r in rows if r["answer"]]
    out_of_scope = [r for r in rows if not r["answer"]]
    n_oos = max(1, test // 5)
    return answerable[0::2][:traffic], answerable[1::2][: test - n_oos] + out_of_scope[:n_oos]


def simulate(bot: SupportBot, questions: list[dict], threshold: float, progress) -> dict:
    """Ask each question in its own conversation; rate and correct as a customer and an agent would."""
    embedder = bot.kb.embedder
    counts = {"up": 0, "down": 0, "approved": 0, "edited": 0}
    for i, row in enumerate(questions):
        reply = bot.ask(row["question"], channel="web")
        a, b = embedder.encode([without_citations(reply.text), row["answer"]])
        good = float(a @ b) >= threshold and not reply.handed_off
        bot.log.add_feedback(reply.message_id, good)
        counts["up" if good else "down"] += 1
        action = "approved" if good else "edited"
        bot.log.add_agent_action(reply.conversation_id, reply.message_id, reply.text if good else row["answer"], action, "simulated-agent")
        counts[action] += 1
        progress("traffic", i + 1, len(questions))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traffic", type=int, default=60)
    parser.add_argument("--test", type=int, default=48)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--method", choices=["dpo", "kto", "both"], default="dpo")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lora-layers", type=int, default=0)
    parser.add_argument("--best-of", type=int, default=0, help="also train a reward model on the log and measure best-of-N")
    parser.add_argument("--best-of-questions", type=int, default=12)
    parser.add_argument("--home", help="reuse this home (default: a fresh temporary one)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "feedback_loop.json"))
    args = parser.parse_args()
    progress = TerminalProgress()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="feedback-loop-"))
    traffic, test = split_questions(args.traffic, args.test)
    config = load_config(home, ["answer.mode=generate", "gate.questions=0", "gate.heldout_share=0"], env={})
    config.gate.eval_file = str(home / "test.csv")
    _write_csv(home / "test.csv", test)

    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([ROOT / "data" / "kb"], progress=progress)
    versions = Versions(home)
    versions.ensure_base(config.model.path, progress)
    before = versions.serving_version("lm")
    timings = {}
    started = time.perf_counter()
    before_metrics = evaluate_version(config, before, test, progress)
    timings["evaluate_before_s"] = time.perf_counter() - started

    started = time.perf_counter()
    bot = SupportBot(config, kb, progress=progress)
    feedback = simulate(bot, traffic, args.threshold, progress)
    timings["traffic_s"] = time.perf_counter() - started

    def settings(lr: float) -> TrainSettings:
        return TrainSettings(epochs=args.epochs, learning_rate=lr, lora_layers=args.lora_layers, batch_size=4)

    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    runs = []
    started = time.perf_counter()
    card = run_training(config, RunRequest("sft", settings(2e-4), kb_seed=False, parent=before), progress, log)
    runs.append(card.to_json())
    for method in (["dpo", "kto"] if args.method == "both" else [args.method]):
        card = run_training(config, RunRequest(method, settings(5e-5), parent=card.version), progress, log)
        runs.append(card.to_json())
    timings["train_s"] = time.perf_counter() - started

    started = time.perf_counter()
    after_metrics = evaluate_version(config, card.version, test, progress)
    timings["evaluate_after_s"] = time.perf_counter() - started

    table = [{"metric": m, "before": before_metrics.get(m), "after": after_metrics.get(m)} for m in METRICS]
    best_of = measure_best_of(config, card.version, test, args, progress, log) if args.best_of > 1 else None
    print(f"feedback loop: {len(traffic)} traffic questions, {len(test)} held-out test questions "
          f"({sum(1 for r in test if not r['answer'])} should hand off); before {before}, after {card.version}")
    print(f"simulated feedback: {feedback}")
    print(f"{'metric':20} {'before':>8} {'after':>8} {'delta':>8}")
    for row in table:
        b, a = row["before"], row["after"]
        delta = f"{a - b:+.4f}" if a is not None and b is not None else ""
        print(f"{row['metric']:20} {b!s:>8} {a!s:>8} {delta:>8}")
    print("training: " + "; ".join(f"{r['method']} {r['metrics']['train']['examples']} examples, "
                                   f"{r['metrics']['train']['steps']} steps, {r['metrics']['train']['seconds']:.0f} s" for r in runs))
    if best_of:
        print(f"best-of-{args.best_of} with the reward model, {best_of['questions']} test questions: "
              + "; ".join(f"{k}: {v['answer_similarity']} similarity, p50 {v['latency_ms_p50']:.0f} ms" for k, v in best_of["runs"].items()))
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "args": vars(args), "before": before, "after": card.version, "feedback": feedback,
              "table": table, "runs": runs, "timings_s": timings, "best_of": best_of}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


def measure_best_of(config, version: str, test: list[dict], args, progress, log) -> dict:
    """Train a reward model on the simulated log, serve it, and compare best-of-1 with best-of-N."""
    reward = run_training(config, RunRequest("reward", TrainSettings(epochs=args.epochs, learning_rate=1e-4,
                                                                     lora_layers=args.lora_layers)), progress, log)
    Versions(config.home).set_serving("reward", reward.version)
    questions = [r for r in test if r["answer"]][: args.best_of_questions]
    runs = {}
    for n in (1, args.best_of):
        config.model.best_of = n
        runs[f"best_of_{n}"] = evaluate_version(config, version, questions, progress)
    config.model.best_of = 1
    return {"reward_version": reward.version, "questions": len(questions), "runs": runs,
            "reward_train": reward.metrics["train"]}


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["question", "answer", "expected_id"])
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in ("question", "answer", "expected_id")} for r in rows)


if __name__ == "__main__":
    sys.exit(main())
