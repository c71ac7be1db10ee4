"""The agents' side of a conversation: which conversations need a person, the bot's suggested reply,
and the agent's action on it (these pairs are the training data of the learning loop)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine import SupportBot
from .log import LogError


@dataclass
class QueueItem:
    conversation_id: str
    reason: str  # handed_off, disliked, low_confidence or copilot
    waiting_since: str
    last_customer: str
    channel: str


@dataclass
class Suggestion:
    """What the bot proposes; draft_message_id is None when it was made for the agent and never sent."""

    text: str
    draft_message_id: int | None
    sources: list[dict] = field(default_factory=list)
    confidence: float = 0.0
    handed_off_reason: str = ""


def review_queue(bot: SupportBot, copilot: bool = False) -> list[QueueItem]:
    """Conversations waiting for a person, oldest first: handed off, the bot's last reply rated down,
    answered with low confidence, or (copilot mode) every conversation whose last reply came from the bot."""
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
    return items


def suggestion(bot: SupportBot, conversation_id: str) -> Suggestion:
    """The bot's reply to the latest message (or the draft policy withheld); when it only handed off,
    or the customer wrote after it, a fresh draft."""
    history = bot.log.history(conversation_id)
    if not history:
        raise LogError(f"no conversation {conversation_id!r}")
    last = history[-1]
    if last.role == "bot" and (last.draft or not last.handed_off):
        return Suggestion(last.draft or last.text, last.id, last.sources, last.confidence or 0.0, last.reason)
    draft = bot.draft(conversation_id)
    return Suggestion(draft.draft or draft.text, None, [s.to_dict() for s in draft.sources], draft.confidence, draft.reason)


def send_reply(bot: SupportBot, conversation_id: str, suggested: Suggestion, final: str, action: str, agent: str) -> int:
    """Send the agent's reply; "approved" sends the suggestion unchanged."""
    if action == "approved":
        final = suggested.text
    return bot.log.add_agent_action(conversation_id, suggested.draft_message_id, final, action, agent,
                                    draft=None if suggested.draft_message_id else suggested.text)


def close(bot: SupportBot, conversation_id: str) -> None:
    bot.log.set_status(conversation_id, "resolved")
