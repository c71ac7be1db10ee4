"""`eval conversations`: does the bot hold up over several turns? Each conversation of a JSONL file is played
turn by turn, and every turn is also asked alone in a fresh conversation (its `standalone` wording when the
file gives one), so that the multi-turn numbers are read against the same questions without context.

A turn with an `expected_id` is right when the reply's first source is that entry (what retrieval chose; a
reply that handed off still carries the sources it looked at). A turn with an empty `expected_id` (small
talk, out of scope) is right when the bot answers nothing from the knowledge base (`Reply.declined`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval import EvalFileError

from .engine import Reply, SupportBot

KINDS = ("first", "follow_up", "switch", "chitchat", "return")


@dataclass
class Turn:
    message: str
    expected_id: str
    kind: str
    standalone: str = ""


@dataclass
class ConversationReport:
    by_kind: list[dict]  # {kind, n, correct, correct_alone, ratio}: right in the conversation vs asked alone
    correct: float  # over all turns
    correct_alone: float
    handoff_precision: float  # of the turns the bot declined, the share that should have been
    handoff_recall: float  # of the turns that should be declined (empty expected_id), the share that were
    conversations: int
    turns: int
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("rows")
        return out


def load_conversations(path: str | Path) -> list[list[Turn]]:
    """The file's conversations; a bad line is refused with the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no such file")
    conversations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            conversations.append(_turns(line, f"{path}: line {number}"))
    if not conversations:
        raise EvalFileError(f"{path}: no conversations")
    return conversations


def _turns(line: str, where: str) -> list[Turn]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise EvalFileError(f"{where}: not JSON ({err.msg})") from None
    turns = record.get("turns") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        raise EvalFileError(f"{where}: expected an object with a non-empty list 'turns'")
    out = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or not isinstance(turn.get("message"), str) or not turn["message"].strip():
            raise EvalFileError(f"{where}: turn {i}: 'message' must be a non-empty string")
        if turn.get("kind") not in KINDS:
            raise EvalFileError(f"{where}: turn {i}: 'kind' must be one of {', '.join(KINDS)}")
        out.append(Turn(turn["message"], str(turn.get("expected_id") or ""), turn["kind"], str(turn.get("standalone") or "")))
    return out


def evaluate_conversations(bot: SupportBot, conversations: list[list[Turn]],
                           progress: Callable[[int, int], None] | None = None) -> ConversationReport:
    """Play every conversation (channel "eval"), then ask each turn alone."""
    rows = []
    for i, turns in enumerate(conversations):
        bot.kb.prefetch([t.message for t in turns] + [t.standalone for t in turns if t.standalone])  # one batch
        conversation_id = None
        for position, turn in enumerate(turns):
            reply = bot.ask(turn.message, conversation_id, channel="eval")
            conversation_id = reply.conversation_id
            # A first turn in its own wording has just been asked alone.
            alone = reply if position == 0 and not turn.standalone else bot.ask(turn.standalone or turn.message, channel="eval")
            rows.append({"conversation": i + 1, **asdict(turn), "reply": reply.text, "reason": reply.reason,
                         "top": _top(reply), "correct": _correct(turn, reply), "top_alone": _top(alone),
                         "correct_alone": _correct(turn, alone), "declined": reply.declined})
        if progress:
            progress(i + 1, len(conversations))
    declined = [r for r in rows if r["declined"]]
    outside = [r for r in rows if not r["expected_id"]]
    return ConversationReport(
        by_kind=[_kind_row(kind, [r for r in rows if r["kind"] == kind]) for kind in KINDS if any(r["kind"] == kind for r in rows)],
        correct=_mean(r["correct"] for r in rows), correct_alone=_mean(r["correct_alone"] for r in rows),
        handoff_precision=_mean(not r["expected_id"] for r in declined), handoff_recall=_mean(r["declined"] for r in outside),
        conversations=len(conversations), turns=len(rows), rows=rows,
    )


def _top(reply: Reply) -> str:
    return reply.sources[0].entry_id if reply.sources else ""


def _correct(turn: Turn, reply: Reply) -> bool:
    return _top(reply) == turn.expected_id if turn.expected_id else reply.declined


def _kind_row(kind: str, rows: list[dict]) -> dict:
    correct, alone = _mean(r["correct"] for r in rows), _mean(r["correct_alone"] for r in rows)
    return {"kind": kind, "n": len(rows), "correct": correct, "correct_alone": alone,
            "ratio": round(correct / alone, 4) if alone else None}


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0
