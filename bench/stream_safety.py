"""What a streamed reply on the OpenAI route costs in time to first token, three ways, and what each shows
a standard client that the policy then withdraws (such a client cannot understand `replaced_content`).

The policy checks a generated reply only whole (chatbot/engine.py `_generate`): citations resolved, HTML and
foreign links removed, leaks, unsupported offers, credentials, role claims, the output filter, grounding
(a share over the whole reply). Three ways to stream it:

- live: every piece as the model makes it (the route before issue 25);
- gated: at each sentence end, the sentences so far go through the same checks, and what passes is released
  when it extends what was released before; the final text at the end;
- held: nothing until the reply is final (the route since issue 25).

For each answerable question of data/eval/answers.csv (every `--every`th, `answer.mode = generate` so that the
model answers each one): seconds from the call to the first non-empty content (`SupportService.openai_chat`,
the route's own path, without HTTP), and whether any text shown was not the start of the final reply.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/stream_safety.py --home HOME   # a home with the demo KB and model
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import chatbot.engine as engine  # noqa: E402
from chatbot import load_config  # noqa: E402
from chatbot.citations import resolve_citations  # noqa: E402
from chatbot.grounding import grounding  # noqa: E402
from chatbot.policy import sanitize, unsafe  # noqa: E402
from chatbot.prompt import system_prompt  # noqa: E402
from ui.service import SupportService  # noqa: E402

SENTENCE_END = re.compile(r"[.!?](?=\s)")


def checked(prefix: str, kept: list, question: str, bot) -> str:
    """The text the policy would send for `prefix` as a whole reply, or "" when it would replace it."""
    settings = bot.settings
    passages = [s.text for s in kept]
    answer, _ = resolve_citations(sanitize(prefix, passages), kept)
    if not answer or bot.messages.handoff[:40] in answer or grounding(answer, passages, question) < settings.grounding_min:
        return ""
    return "" if unsafe(answer, passages, system_prompt(settings), settings.output_filter) else answer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--every", type=int, default=8, help="every Nth answerable question (8: 24 of them)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream_safety.json"))
    args = parser.parse_args()

    config = load_config(args.home, ["answer.mode=generate"])
    service = SupportService(config)
    service.warm_up()
    kept_box: list = []
    build = engine.build_messages

    def recording_build(*a, **k):
        messages, kept, extra = build(*a, **k)
        kept_box[:] = [kept]
        return messages, kept, extra

    engine.build_messages = recording_build
    with open(ROOT / "data" / "eval" / "answers.csv", encoding="utf-8") as f:
        questions = [row["question"] for row in csv.DictReader(f) if row["answer"].strip()][:: args.every]
    service.openai_chat([{"role": "user", "content": questions[0]}], None, None).result()  # warm-up turn

    rows = []
    for i, question in enumerate(questions):
        kept_box.clear()
        started = time.perf_counter()
        response = service.openai_chat([{"role": "user", "content": question}], None, None)
        streamed, released, live_first, gated_first, gated_withdrawn = "", "", None, None, False
        for piece in response:
            at = time.perf_counter() - started
            streamed += piece
            if live_first is None and piece.strip():
                live_first = at
            ends = [m.end() for m in SENTENCE_END.finditer(streamed)]
            if kept_box and ends and ends[-1] > len(released):
                text = checked(streamed[: ends[-1]], kept_box[0], question, service.bot)
                if text.startswith(released) and len(text) > len(released):
                    released, gated_first = text, gated_first or at
        reply = response.reply
        held = time.perf_counter() - started
        gated_withdrawn = bool(released) and not reply.text.startswith(released)
        rows.append({"question": question, "generated": bool(kept_box), "reason": reply.reason, "tokens": reply.reply_tokens,
                     "live_s": live_first or held, "gated_s": gated_first or held, "held_s": held,
                     "live_withdrawn": not reply.text.startswith(streamed), "gated_withdrawn": gated_withdrawn})
        r = rows[-1]
        print(f"{i + 1}/{len(questions)} live {r['live_s']:.2f} gated {r['gated_s']:.2f} held {r['held_s']:.2f} "
              f"{r['reason'] or 'answered'} withdrawn live={r['live_withdrawn']} gated={r['gated_withdrawn']}", file=sys.stderr)

    generated = [r for r in rows if r["generated"]]
    summary = {"questions": len(rows), "generated": len(generated), "replaced_by_policy": sum(bool(r["reason"]) for r in generated),
               "load_average": os.getloadavg()[0], "cores": os.cpu_count()}
    for way in ("live", "gated", "held"):
        times = sorted(r[f"{way}_s"] for r in generated)
        summary[way] = {"ttft_p50_s": round(statistics.median(times), 3), "ttft_p90_s": round(times[int(0.9 * (len(times) - 1))], 3),
                        "withdrawn": sum(r.get(f"{way}_withdrawn", False) for r in generated)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
