"""Two runs of `supportbot eval answers --rows` compared question by question.

Answer similarity of each run, the paired difference per question (B - A) with a bootstrap 95% interval
(10,000 resamples of the questions, seeded), hand-offs of each, and how many replies are identical. Used
for the quality of a serving change that should not change the answers (a GGUF type, drafts, the passage
cache):

    supportbot --set model.passage_cache=off eval answers data/eval/answers.csv --mode generate --rows A.jsonl
    supportbot --set model.passage_cache=on eval answers data/eval/answers.csv --mode generate --rows B.jsonl
    .venv/bin/python bench/paired_answers.py A.jsonl B.jsonl [--eval data/eval/answers.csv] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from chatbot.evaluate import load_answer_rows  # noqa: E402

RESAMPLES = 10_000


def read_rows(path: Path) -> dict[str, dict]:
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows[row["question"]] = row
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            sys.exit(f"{path}:{number}: not a row of `eval answers --rows` ({err})")
    return rows


def compare(a: dict[str, dict], b: dict[str, dict], answerable: set[str]) -> dict:
    """Similarity over the answerable questions (a reference answer in the eval file) asked in both runs."""
    questions = [q for q in a if q in b and q in answerable]
    if not questions:
        sys.exit("the two runs share no scored question")
    sim_a = np.array([a[q]["similarity"] for q in questions])
    sim_b = np.array([b[q]["similarity"] for q in questions])
    diff = sim_b - sim_a
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (RESAMPLES, len(diff)))].mean(axis=1)
    shared = [q for q in a if q in b]
    return {
        "questions": len(questions),
        "similarity_a": round(float(sim_a.mean()), 4),
        "similarity_b": round(float(sim_b.mean()), 4),
        "difference": round(float(diff.mean()), 4),
        "low": round(float(np.percentile(means, 2.5)), 4),
        "high": round(float(np.percentile(means, 97.5)), 4),
        "handed_off_a": sum(bool(a[q].get("handed_off")) for q in shared),
        "handed_off_b": sum(bool(b[q].get("handed_off")) for q in shared),
        "identical": sum(a[q].get("reply") == b[q].get("reply") for q in shared),
        "shared": len(shared),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="rows of the baseline run")
    parser.add_argument("b", type=Path, help="rows of the changed run")
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval" / "answers.csv", help="the eval file both ran")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    answerable = {row["question"] for row in load_answer_rows(args.eval) if row["answer"]}
    r = compare(read_rows(args.a), read_rows(args.b), answerable)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['questions']} answerable questions: answer similarity {r['similarity_a']} (A) and {r['similarity_b']} (B); "
          f"paired difference B - A {r['difference']:+.4f} (95% bootstrap {r['low']:+.4f} to {r['high']:+.4f})")
    print(f"hand-offs {r['handed_off_a']} (A) and {r['handed_off_b']} (B) of {r['shared']}; "
          f"identical replies {r['identical']} / {r['shared']}")


if __name__ == "__main__":
    main()
