"""Suggestions from the log: what agents knew that the knowledge base did not.

Retraining weights cannot answer a question the knowledge base lacks: it is handed off before the model runs,
however often we train. So the loop also reads agents' work and proposes changes to the knowledge base:

- new_entry: questions the bot handed off for want of an answer (low confidence, out of scope, not grounded,
  the model's own hand-off, a draft an agent rejected) that an agent answered; questions asking the same thing
  (embedder similarity) make one suggestion with all their wordings, answered by the reply most agents sent
  (else the latest);
- variant: a customer's wording an existing entry resolved (thumbs up, an agent sent the bot's reply or the
  entry's answer as is) that is not already close to one of the entry's variants;
- revision: agents rewrote an entry's curated answer repeatedly (edited it, or replaced it with nearly the same
  answer; a reply unlike it says the bot picked the wrong entry and counts towards a new entry);
- flag: an entry whose answers are rated down or rejected far more often than the rest.

Nothing reaches the knowledge base until it is accepted (`accept`; `learn.auto_accept` lists the kinds applied
unreviewed). An accepted change goes through the ingestion code of uploads (`KnowledgeBase.put`), marked with
its origin (`learned:<id>` as the entry's source) and can be undone (`revert`). A rejected suggestion is not
proposed again from the same evidence.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from chatbot import SupportBot
from chatbot.config import LearnSettings
from chatbot.evaluate import without_citations
from retrieval.loaders import slugify

KINDS = ("new_entry", "variant", "revision", "flag")
GAP_REASONS = ("low_confidence", "out_of_scope", "not_grounded", "model_handoff")  # handed off for want of an answer
REWRITES = ("edited", "rejected")


class SuggestionError(ValueError):
    """A suggestion that cannot be applied or decided (unknown, already decided, its entry gone); one line."""


@dataclass
class _Evidence:
    conversations: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)

    def add(self, conversation_id: str, date: str) -> None:
        if conversation_id not in self.conversations:
            self.conversations.append(conversation_id)
        self.dates.append(date)

    def to_json(self, **extra) -> dict:
        return {"conversations": self.conversations, "count": len(self.conversations),
                "first": min(self.dates), "last": max(self.dates), **extra}


# --- proposing ----------------------------------------------------------------------------------------


def refresh(bot: SupportBot, settings: LearnSettings) -> list[int]:
    """Propose from the log as it is now; the ids of the suggestions that are new."""
    return bot.log.sync_suggestions(propose(bot, settings))


def propose(bot: SupportBot, settings: LearnSettings) -> list[dict]:
    answers = [_read(bot, row, settings) for row in bot.log.agent_answers()]
    rated = [_decoded(row) for row in bot.log.rated_answers()]
    return (_new_entries(bot, [r for r in answers if r["use"] == "gap"], settings) + _variants(bot, answers, rated, settings)
            + _revisions(bot, [r for r in answers if r["use"] == "revision"], settings) + _flags(bot, answers, rated, settings))


def _decoded(row: dict) -> dict:
    sources = json.loads(row.get("bot_sources") or "[]")
    return {**row, "top": sources[0]["id"] if sources else ""}


def _read(bot: SupportBot, row: dict, settings: LearnSettings) -> dict:
    """What an agent's reply teaches (`use`): an answer the knowledge base lacks ("gap"), a wording of the
    entry whose answer the agent sent as is ("variant", `entry`), a rewrite of the curated answer the bot gave
    ("revision"), the bot's answer confirmed ("confirmed"), or nothing ("")."""
    row = _decoded(row)
    answered = not row.get("bot_handed_off") and bool(row["top"])
    curated = answered and row.get("bot_mode") == "template"
    sent = _entry_answered(bot, row["final"])
    if curated and row["action"] in REWRITES:
        entry = bot.kb.entry(row["top"])
        if sent and sent != row["top"]:  # the bot chose the wrong entry; the agent sent the right one
            use = "variant"
        elif entry is not None and entry.kind == "faq" and (
                row["action"] == "edited" or _similarity(bot, row["final"], entry.answer) >= settings.revision_similarity):
            use = "revision"  # edited from the entry's answer, or replaced by one saying nearly the same
        else:
            use = "gap"  # the bot's entry was beside the point and the agent knew the answer
    elif (row.get("bot_handed_off") and row.get("bot_reason") in GAP_REASONS) or row["action"] == "rejected":
        use = "variant" if sent else "gap"
    else:
        use = "confirmed" if row["action"] == "approved" and answered else ""
    return {**row, "use": use, "entry": sent if use == "variant" else row["top"]}


def _new_entries(bot: SupportBot, gaps: list[dict], settings: LearnSettings) -> list[dict]:
    known = _known_wordings(bot)
    gaps = [r for r in gaps if _norm(r["question"]) not in known]
    if not gaps:
        return []
    vectors = _vectors(bot, [r["question"] for r in gaps])
    out = []
    for group in _groups(vectors, [_norm(r["final"]) for r in gaps], settings.group_similarity):
        rows = [gaps[i] for i in group]
        evidence = _Evidence()
        for r in rows:
            evidence.add(r["conversation_id"], r["created_at"])
        wordings = list(dict.fromkeys(bot.log.redact(r["question"].strip()) for r in rows))
        answer = bot.log.redact(_consensus([r["final"] for r in rows]))
        out.append({"kind": "new_entry", "entry_id": _new_id(bot, wordings[0]), "questions": wordings, "answer": answer,
                    "evidence": evidence.to_json(title=wordings[0][:120], category=_category(bot, rows)),
                    "fingerprint": _fingerprint("new_entry", "", evidence.conversations)})
    return out


def _variants(bot: SupportBot, answers: list[dict], rated: list[dict], settings: LearnSettings) -> list[dict]:
    """Wordings resolved by an entry, grouped by entry and wording."""
    found: dict[tuple[str, str], tuple[str, _Evidence]] = {}
    resolved = [(r["top"], r) for r in rated if r["rating"] > 0] + [(r["entry"], r) for r in answers if r["use"] in ("variant", "confirmed")]
    for entry_id, row in resolved:
        question = bot.log.redact(row["question"].strip())
        _, evidence = found.setdefault((entry_id, _norm(question)), (question, _Evidence()))
        evidence.add(row["conversation_id"], row["created_at"])
    out = []
    for (entry_id, _), (question, evidence) in found.items():
        entry = bot.kb.entry(entry_id)
        if entry is None or entry.kind != "faq" or _norm(question) in {_norm(q) for q in entry.questions}:
            continue
        if float((_vectors(bot, entry.questions) @ _vectors(bot, [question])[0]).max()) >= settings.variant_similarity:
            continue
        out.append({"kind": "variant", "entry_id": entry_id, "questions": [question], "evidence": evidence.to_json(),
                    "fingerprint": _fingerprint("variant", entry_id, [_norm(question)])})
    return out


def _revisions(bot: SupportBot, rewrites: list[dict], settings: LearnSettings) -> list[dict]:
    by_entry: dict[str, list[dict]] = {}
    for row in rewrites:
        by_entry.setdefault(row["top"], []).append(row)
    out = []
    for entry_id, rows in by_entry.items():
        entry = bot.kb.entry(entry_id)
        if len(rows) < settings.min_revisions or entry is None:
            continue
        evidence = _Evidence()
        for r in rows:
            evidence.add(r["conversation_id"], r["created_at"])
        out.append({"kind": "revision", "entry_id": entry_id, "answer": bot.log.redact(_consensus([r["final"] for r in rows])),
                    "previous": entry.answer, "evidence": evidence.to_json(),
                    "fingerprint": _fingerprint("revision", entry_id, evidence.conversations)})
    return out


def _flags(bot: SupportBot, answers: list[dict], rated: list[dict], settings: LearnSettings) -> list[dict]:
    bad: dict[str, _Evidence] = {}
    for row in [r for r in rated if r["rating"] < 0] + [r for r in answers if r["action"] in REWRITES and not r.get("bot_handed_off") and r["top"]]:
        bad.setdefault(row["top"], _Evidence()).add(row["conversation_id"], row["created_at"])
    totals = bot.log.answers_by_entry()
    all_bad, all_answers = sum(len(e.conversations) for e in bad.values()), sum(totals.values())
    out = []
    for entry_id, evidence in bad.items():
        n, total = len(evidence.conversations), max(totals.get(entry_id, 0), len(evidence.conversations))
        rest = (all_bad - n) / max(1, all_answers - total)
        if n >= settings.flag_min_bad and n / total >= settings.flag_ratio * rest and bot.kb.entry(entry_id) is not None:
            out.append({"kind": "flag", "entry_id": entry_id,
                        "evidence": evidence.to_json(answers=total, bad_rate=round(n / total, 3), others_bad_rate=round(rest, 3)),
                        "fingerprint": _fingerprint("flag", entry_id, evidence.conversations)})
    return out


def _groups(vectors: np.ndarray, replies: list[str], threshold: float) -> list[list[int]]:
    """Greedy grouping in log order: a question joins the first group that an agent answered with the same
    reply, or whose mean vector it is `threshold` similar to."""
    groups: list[list[int]] = []
    sums: list[np.ndarray] = []
    for i, vector in enumerate(vectors):
        scores = [float(vector @ s) / (np.linalg.norm(s) or 1.0) for s in sums]
        same = next((g for g, members in enumerate(groups) if any(replies[j] == replies[i] for j in members)), None)
        best = same if same is not None else int(np.argmax(scores)) if scores else -1
        if best >= 0 and (same is not None or scores[best] >= threshold):
            groups[best].append(i)
            sums[best] = sums[best] + vector
        else:
            groups.append([i])
            sums.append(vector.copy())
    return groups


def _consensus(replies: list[str]) -> str:
    """The reply most agents sent (two or more alike), else the latest."""
    counts = Counter(_norm(r) for r in replies)
    text, n = counts.most_common(1)[0]
    return next(r for r in reversed(replies) if _norm(r) == text).strip() if n > 1 else replies[-1].strip()


def _entry_answered(bot: SupportBot, reply: str) -> str | None:
    """The entry whose curated answer the agent sent as is, if any."""
    text = without_citations(reply)
    hits = bot.kb.search(text, k=1)
    entry = bot.kb.entry(hits[0].entry_id) if hits else None
    return entry.id if entry is not None and _norm(entry.answer) == _norm(text) else None


def _known_wordings(bot: SupportBot) -> set[str]:
    return {_norm(q) for summary in bot.kb.entries() for q in (bot.kb.entry(summary.id).questions if summary.variants else [])}


def _category(bot: SupportBot, rows: list[dict]) -> str:
    categories = Counter(e.category for r in rows if r["top"] and (e := bot.kb.entry(r["top"])) is not None and e.category)
    return categories.most_common(1)[0][0] if categories else ""


def _new_id(bot: SupportBot, question: str) -> str:
    base = "learned-" + (slugify(question)[:48].rstrip("-") or "entry")
    entry_id, n = base, 2
    while bot.kb.entry(entry_id) is not None:
        entry_id, n = f"{base}-{n}", n + 1
    return entry_id


def _similarity(bot: SupportBot, a: str, b: str) -> float:
    va, vb = _vectors(bot, [without_citations(a), without_citations(b)])
    return float(va @ vb)


def _vectors(bot: SupportBot, texts: list[str]) -> np.ndarray:
    vectors = bot.kb.embedder.encode(texts)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _fingerprint(kind: str, entry_id: str, evidence: list[str]) -> str:
    return hashlib.sha256(json.dumps([kind, entry_id, sorted(evidence)]).encode()).hexdigest()[:32]


# --- deciding -----------------------------------------------------------------------------------------


def accept(bot: SupportBot, suggestion_id: int, by: str = "", answer: str | None = None,
           questions: list[str] | None = None) -> dict:
    """Apply one open suggestion (with ops' edits of its answer or wordings) to the knowledge base. It is
    claimed first, so two processes accepting the same one apply it once; a failed apply leaves it open."""
    suggestion = _open(bot, suggestion_id)
    edits = {k: v for k, v in (("answer", answer), ("questions", questions)) if v is not None}
    if "answer" in edits and suggestion["kind"] in ("new_entry", "revision") and not edits["answer"].strip():
        raise SuggestionError(f"suggestion {suggestion_id}: the answer is empty")
    suggestion.update(edits)
    if not bot.log.decide_suggestion(suggestion_id, "accepted", by, **edits):
        raise SuggestionError(f"suggestion {suggestion_id} was decided meanwhile")
    try:
        previous = _apply(bot, suggestion)
    except BaseException:
        bot.log.decide_suggestion(suggestion_id, "open", "", before="accepted")
        raise
    if previous is not None:
        bot.log.decide_suggestion(suggestion_id, "accepted", by, before="accepted", previous=previous)
    return bot.log.suggestion(suggestion_id)


def reject(bot: SupportBot, suggestion_id: int, by: str = "") -> dict:
    _open(bot, suggestion_id)
    if not bot.log.decide_suggestion(suggestion_id, "rejected", by):
        raise SuggestionError(f"suggestion {suggestion_id} was decided meanwhile")
    return bot.log.suggestion(suggestion_id)


def revert(bot: SupportBot, suggestion_id: int, by: str = "") -> dict:
    """Undo an accepted suggestion: remove the learned entry, the added wordings, or restore the old answer."""
    suggestion = bot.log.suggestion(suggestion_id)
    if suggestion is None or suggestion["status"] != "accepted":
        raise SuggestionError(f"suggestion {suggestion_id}: {'no such suggestion' if suggestion is None else 'not accepted, nothing to undo'}")
    if not bot.log.decide_suggestion(suggestion_id, "reverted", by, before="accepted"):
        raise SuggestionError(f"suggestion {suggestion_id} was reverted meanwhile")
    kind, entry = suggestion["kind"], bot.kb.entry(suggestion["entry_id"])
    if kind == "new_entry":
        bot.kb.remove(suggestion["entry_id"])
    elif entry is not None and kind == "variant":
        added = {_norm(q) for q in suggestion["questions"]}
        _put(bot, entry, questions=[q for q in entry.questions if _norm(q) not in added] or entry.questions[:1])
    elif entry is not None and kind == "revision":
        _put(bot, entry, answer=suggestion["previous"])
    return bot.log.suggestion(suggestion_id)


def auto_accept(bot: SupportBot, settings: LearnSettings, by: str = "learn") -> list[int]:
    """Accept the open suggestions of the kinds `learn.auto_accept` allows; those that cannot be applied stay open."""
    done = []
    for suggestion in bot.log.suggestions("open"):
        if suggestion["kind"] in settings.auto_accept:
            try:
                accept(bot, suggestion["id"], by)
                done.append(suggestion["id"])
            except SuggestionError:
                continue
    return done


def _open(bot: SupportBot, suggestion_id: int) -> dict:
    suggestion = bot.log.suggestion(suggestion_id)
    if suggestion is None:
        raise SuggestionError(f"no suggestion {suggestion_id}")
    if suggestion["status"] != "open":
        raise SuggestionError(f"suggestion {suggestion_id} is already {suggestion['status']}")
    return suggestion


def _apply(bot: SupportBot, suggestion: dict) -> str | None:
    """Write the suggestion into the knowledge base; the entry's answer before a revision (for undo)."""
    kind, entry_id = suggestion["kind"], suggestion["entry_id"]
    if kind == "flag":
        return None  # a flag asks ops to look at the entry: accepting it records that they did
    if kind == "new_entry":
        if bot.kb.entry(entry_id) is not None:
            raise SuggestionError(f"suggestion {suggestion['id']}: an entry {entry_id!r} exists already")
        bot.kb.put(entry_id, suggestion["evidence"].get("title") or suggestion["questions"][0], suggestion["answer"],
                   suggestion["questions"], suggestion["evidence"].get("category", ""), source=f"learned:{suggestion['id']}")
        return None
    entry = bot.kb.entry(entry_id)
    if entry is None:
        raise SuggestionError(f"suggestion {suggestion['id']}: entry {entry_id!r} was removed meanwhile")
    if kind == "variant":
        _put(bot, entry, questions=entry.questions + suggestion["questions"])
        return None
    _put(bot, entry, answer=suggestion["answer"])
    return entry.answer


def _put(bot: SupportBot, entry, answer: str | None = None, questions: list[str] | None = None) -> None:
    bot.kb.put(entry.id, entry.title, entry.answer if answer is None else answer, entry.questions if questions is None else questions,
               entry.category, entry.url, source=entry.source)
