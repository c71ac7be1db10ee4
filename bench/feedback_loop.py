"""Feedback-loop benchmark: a simulated fortnight. Does the product learn what its agents know?

Protocol (everything through the product's own code: the engine, the service methods the web app calls, and
`learn`):

1. The knowledge base is data/kb with a share of the FAQ entries held back (`--held-back`, 0.3, seeded):
   only the simulated agents know their answers.
2. Week 1: the week-1 questions of data/eval/feedback_traffic.jsonl (two wordings per FAQ entry, written for
   this bench, and out-of-scope questions), each in its own conversation through `SupportService.chat`. The
   simulated customer rates a reply up when it is similar to the entry's answer (`--threshold`, 0.8) and down
   otherwise; the simulated agent answers every hand-off and every wrong reply of an answerable question with
   the entry's answer (`SupportService.send`, "rejected": the agent's own reply).
3. `learn`, with ops accepting every suggestion (learn.auto_accept = all kinds). Groups: *none* (no learning),
   *knowledge* (`learn --no-train`: suggestions only), and with `--weights` also *weights* (`--roles`, by
   default the retriever, trained from the log and the knowledge base behind its gate; no suggestions) and
   *both* (suggestions accepted, then the same training).
4. Week 2: the other wordings of the same questions, never asked in week 1, in fresh conversations.

Per group: the share of week-2 questions resolved (answered, not handed off, similarity to the entry's
answer >= the threshold) for held-back and for present entries, mean answer similarity, the share of
out-of-scope questions declined, and how long `learn` took.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/feedback_loop.py [--held-back 0.3] [--weights] [--mode auto]

Results go to bench/results/feedback_loop.json; the table to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot import load_config  # noqa: E402
from chatbot.evaluate import without_citations  # noqa: E402
from training.learn import learn  # noqa: E402
from training.suggestions import KINDS  # noqa: E402
from ui.progress import TerminalProgress  # noqa: E402
from ui.service import SupportService  # noqa: E402

GROUPS = {"none": None, "knowledge": (list(KINDS), False), "weights": ([], True), "both": (list(KINDS), True)}  # auto_accept, train


def knowledge(folder: Path, held_back: float, seed: int) -> tuple[dict[str, str], set[str]]:
    """Write data/kb without the held-back FAQ entries into `folder`; every FAQ answer by id, and the ids held back."""
    with (ROOT / "data" / "kb" / "faq.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    answers = {r["id"]: r["answer"] for r in rows}
    ids = sorted(answers)
    held = set(random.Random(seed).sample(ids, round(held_back * len(ids))))
    folder.mkdir(parents=True)
    with (folder / "faq.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["id"] not in held)
    for document in (ROOT / "data" / "kb").glob("*.md"):
        (folder / document.name).write_text(document.read_text(encoding="utf-8"), encoding="utf-8")
    return answers, held


def play(service: SupportService, items: list[dict], answers: dict[str, str], threshold: float, act: bool, progress, stage: str) -> list[dict]:
    """Ask each question in its own conversation; with `act`, rate and answer as a customer and an agent would."""
    embedder = service.bot.kb.embedder
    agent = service.login("agent", "agent")["token"] if act else ""
    rows = []
    for i, item in enumerate(items):
        reply = list(service.chat(item["question"]))[-1]["reply"]
        reference = answers.get(item["entry_id"], "")
        similarity = 0.0
        if reference and not reply["declined"]:
            a, b = embedder.encode([without_citations(reply["answer"]), reference])
            similarity = float(a @ b)
        resolved = bool(reference) and not reply["declined"] and similarity >= threshold
        if act and reference:
            if not reply["declined"]:
                service.rate(reply["message_id"], resolved)
            if not resolved:
                service.send(agent, reply["conversation_id"], "rejected", reference, "")
        rows.append({**item, "declined": reply["declined"], "similarity": round(similarity, 4), "resolved": resolved})
        progress(stage, i + 1, len(items))
    return rows


def summary(rows: list[dict], held: set[str]) -> dict:
    def share(values) -> float:
        values = list(values)
        return round(sum(values) / len(values), 3) if values else 0.0

    held_rows = [r for r in rows if r["entry_id"] in held]
    present = [r for r in rows if r["entry_id"] and r["entry_id"] not in held]
    outside = [r for r in rows if not r["entry_id"]]
    return {"held_back_resolved": share(r["resolved"] for r in held_rows), "present_resolved": share(r["resolved"] for r in present),
            "held_back_similarity": share(r["similarity"] for r in held_rows), "present_similarity": share(r["similarity"] for r in present),
            "out_of_scope_declined": share(r["declined"] for r in outside), "questions": len(rows)}


def open_service(home: Path, args) -> SupportService:
    return SupportService(load_config(home, [f"answer.mode={args.mode}", "learn.min_new_replies=0"], env={}))


def close(service: SupportService) -> None:
    service.bot.log.close()
    service.bot.kb.close()


def week_one(kb_folder: Path, answers: dict, traffic: list[dict], args, progress) -> tuple[Path, list[dict]]:
    """Week 1 once, in a home every group starts from (a copy each): the same log for every group."""
    home = Path(tempfile.mkdtemp(prefix="feedback-week1-"))
    service = open_service(home, args)
    service.bot.kb.add([kb_folder])
    rows = play(service, [t for t in traffic if t["week"] == 1], answers, args.threshold, True, progress, "week 1")
    close(service)
    return home, rows


def run_group(name: str, week1_home: Path, answers: dict, held: set, traffic: list[dict], args, progress) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"feedback-{name}-")) / "home"
    shutil.copytree(week1_home, home)
    learned = {}
    if GROUPS[name]:
        config = open_service(home, args).config
        config.learn.auto_accept, train = GROUPS[name]
        config.learn.roles = args.roles
        started = time.perf_counter()
        report = learn(config, train=train, progress=progress)
        learned = {"seconds": round(time.perf_counter() - started, 1), "auto_accepted": len(report.auto_accepted),
                   "open": report.open_suggestions, "trained": report.trained, "handoff": report.handoff}
    service = open_service(home, args)  # a fresh process's view: the promoted versions and the grown KB
    week2 = play(service, [t for t in traffic if t["week"] == 2], answers, args.threshold, False, progress, f"{name}: week 2")
    close(service)
    return {"group": name, "week2": summary(week2, held), "learn": learned, "rows": week2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held-back", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--mode", default="auto", help="answer.mode (the product's default: auto)")
    parser.add_argument("--weights", action="store_true", help="also the groups that train weights")
    parser.add_argument("--roles", nargs="+", default=["retriever"], choices=["lm", "retriever"],
                        help="what the weights groups train (the LM takes tens of minutes on a CPU)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "feedback_loop.json"))
    args = parser.parse_args()
    progress = TerminalProgress()
    traffic = [json.loads(line) for line in (ROOT / "data" / "eval" / "feedback_traffic.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    kb_folder = Path(tempfile.mkdtemp(prefix="feedback-kb-")) / "kb"
    answers, held = knowledge(kb_folder, args.held_back, args.seed)
    groups = ["none", "knowledge"] + (["weights", "both"] if args.weights else [])
    week1_home, week1 = week_one(kb_folder, answers, traffic, args, progress)
    results = [run_group(name, week1_home, answers, held, traffic, args, progress) for name in groups]

    print(f"feedback loop: {len(held)} of {len(answers)} FAQ entries held back; week 2 (new wordings), mode {args.mode}")
    print(f"{'group':10} {'held-back resolved':>19} {'present resolved':>17} {'held-back sim':>14} {'present sim':>12} {'OOS declined':>13} {'learn s':>8}")
    for r in results:
        w = r["week2"]
        print(f"{r['group']:10} {w['held_back_resolved']:>19.3f} {w['present_resolved']:>17.3f} {w['held_back_similarity']:>14.3f} "
              f"{w['present_similarity']:>12.3f} {w['out_of_scope_declined']:>13.3f} {r['learn'].get('seconds', 0):>8.1f}")
    for r in results:  # what `learn` did to the hand-off threshold (training/thresholds.py)
        refit = r["learn"].get("handoff")
        if refit:
            change = f"{refit['current']} -> {refit['proposed']}" if refit["applied"] else f"stays {refit['current']} ({refit['why']})"
            print(f"{r['group']}: hand-off threshold {change}; {refit['outcomes']} outcomes, held-out right decisions "
                  f"{refit['right_before']} -> {refit['right']}")
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "args": vars(args),
              "held_back": sorted(held), "week1": summary(week1, held), "groups": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
