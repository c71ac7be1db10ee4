"""The agents' side of a conversation: which conversations need a person, the bot's suggested reply,
and the agent's action on it (these pairs are the training data of the learning loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .engine import SupportBot
from .log import ConversationLog, LogError


@dataclass
class QueueItem:
    conversation_id: str
    reason: str  # handed_off, disliked, low_confidence or copilot
    waiting_since: str
    last_customer: str
    channel: str
    after_hours: bool = False  # handed off while nobody was in (serve.business_hours), not answered since


@dataclass
class Suggestion:
    """What the bot proposes to an agent; draft_message_id is None when it was made for the agent and never sent."""

    text: str
    draft_message_id: int | None
    sources: list[dict] = field(default_factory=list)
    confidence: float = 0.0
    handed_off_reason: str = ""
    origin: str = ""  # "reply" (the bot's reply), "draft" (a model draft), "entry" (an entry's answer), "" (none)
    note: str = ""  # for the agent: where the text comes from, and why the customer did not get it


# Why the bot did not answer, in words for agents (the log's reasons).
REASONS = {
    "low_confidence": "no confident match in the knowledge base",
    "out_of_scope": "outside the shop's subject",
    "not_grounded": "the draft was not supported by its sources",
    "model_handoff": "the model handed off itself",
    "human": "the customer asked for a person",
    "language": "not written in English",
    "error": "the model failed",
    "leak": "the draft repeated the bot's instructions",
    "unsupported_offer": "the draft promised an offer its sources do not state",
    "credentials": "the draft asked for credentials",
    "role": "the draft claimed another role",
    "output_filter": "the draft matched the output filter",
    "waiting_for_agent": "the customer was waiting for a person",
}


def review_queue(bot: SupportBot, copilot: bool = False) -> list[QueueItem]:
    """Conversations waiting for a person, oldest first: handed off, the bot's last reply rated down,
    answered with low confidence, or (copilot mode) every conversation whose last reply came from the bot. Those
    handed off outside business hours and not answered since come first (oldest first among them), so that the
    customers who waited overnight are answered first when the day starts."""
    low = bot.config.serve.review_confidence
    items = []
    for row in bot.log.awaiting_reply():
        if row["status"] == "handed_off":
            reason = "handed_off"
        elif row["last_rating"] == -1:
            reason = "disliked"
        elif row["last_role"] == "bot" and row["last_confidence"] is not None and row["last_confidence"] < low:
            reason = "low_confidence"
        elif copilot:
            reason = "copilot"
        else:
            continue
        items.append(QueueItem(row["id"], reason, row["waiting_since"] or row["last_at"], row["last_customer"] or "", row["channel"]))
    away = bot.log.after_hours_waiting([i.conversation_id for i in items if i.reason == "handed_off"])
    for item in items:
        item.after_hours = item.conversation_id in away
    return sorted(items, key=lambda i: not i.after_hours)  # stable: oldest first within each group


def suggestion(bot: SupportBot, conversation_id: str) -> Suggestion:
    """Something to start from, never the hand-off text: the bot's reply to the latest message; else the
    model's draft that policy withheld (with why); else a fresh draft; else the best matching entry's answer;
    else nothing (an empty text, which the agent cannot send as is)."""
    history = bot.log.history(conversation_id)
    if not history:
        raise LogError(f"no conversation {conversation_id!r}")
    last = history[-1]
    if last.role == "bot" and not last.handed_off and last.reason == "":
        return Suggestion(last.text, last.id, last.sources, last.confidence or 0.0, origin="reply", note="The bot's reply.")
    withheld = next((m for m in reversed(history) if m.role == "customer" or m.draft), None)
    if withheld is not None and withheld.role == "bot":
        return Suggestion(withheld.draft, withheld.id, withheld.sources, withheld.confidence or 0.0, withheld.reason,
                          "draft", f"The bot's draft, not sent: {_why(withheld.reason)}.")
    fresh = bot.draft(conversation_id)
    sources = [s.to_dict() for s in fresh.sources]
    if fresh.draft or not (fresh.declined or fresh.reason == "empty"):
        note = f"A draft, not sent: {_why(fresh.reason)}." if fresh.draft else "A draft for the customer's latest question."
        return Suggestion(fresh.draft or fresh.text, None, sources, fresh.confidence, fresh.reason, "draft", note)
    if fresh.sources:
        top = fresh.sources[0]
        return Suggestion(top.text, None, sources, fresh.confidence, fresh.reason, "entry",
                          f"No draft ({_why(fresh.reason)}): the closest entry's answer, \u201c{top.title}\u201d; check that it fits.")
    return Suggestion("", None, [], 0.0, fresh.reason, "", "Nothing to suggest: write your reply.")


def _why(reason: str) -> str:
    return REASONS.get(reason, reason or "no reason recorded")


def send_reply(bot: SupportBot, conversation_id: str, suggested: Suggestion, final: str, action: str, agent: str) -> int:
    """Send the agent's reply; "approved" sends the suggestion unchanged."""
    if action == "approved":
        final = suggested.text
    return bot.log.add_agent_action(conversation_id, suggested.draft_message_id, final, action, agent,
                                    draft=None if suggested.draft_message_id else suggested.text)


def close(bot: SupportBot, conversation_id: str) -> None:
    bot.log.set_status(conversation_id, "resolved")


def close_idle(log: ConversationLog, minutes: int, now: datetime | None = None, conversation_id: str | None = None) -> list[str]:
    """Close as resolved by the bot the open customer conversations (of all, or only `conversation_id`) with no
    customer message for `minutes` at `now` (UTC; an injectable clock): `serve.idle_close_minutes`. A conversation
    waiting for a person is never closed here. Returns the ids closed; minutes <= 0 closes nothing."""
    if minutes <= 0:
        return []
    cutoff = ((now or datetime.now(timezone.utc)) - timedelta(minutes=minutes)).astimezone(timezone.utc)
    idle = log.idle_conversations(cutoff.isoformat(timespec="milliseconds"), conversation_id)
    return [c for c in idle if log.close_if_open(c)]
