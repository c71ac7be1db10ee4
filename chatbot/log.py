"""The conversation log: SQLite (WAL) under the home, the source of truth for agents, analytics and training.

Customer and agent text is redacted before it is stored, so personal data never reaches the disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .redact import redact

STATUSES = ("open", "handed_off", "resolved")
ACTIONS = ("approved", "edited", "rejected")
# Agents' replies and customers' comments: far above any real one, and a bound on what one call stores.
MAX_TEXT_CHARS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations(
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'handed_off', 'resolved')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    role TEXT NOT NULL CHECK (role IN ('customer', 'bot', 'agent')),
    text TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',   -- JSON list of {n, id, title, url, score}
    confidence REAL,
    grounding REAL,
    handed_off INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',      -- why the bot handed off or refused, '' when it answered
    mode TEXT NOT NULL DEFAULT '',        -- how a bot reply was made: generate, template, policy
    draft TEXT NOT NULL DEFAULT '',       -- the model's reply when policy replaced it (for agents, training)
    model TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    reply_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS feedback(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_actions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    draft_message_id INTEGER REFERENCES messages(id),
    draft TEXT NOT NULL,
    final TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('approved', 'edited', 'rejected')),
    agent TEXT NOT NULL DEFAULT '',
    reply_message_id INTEGER REFERENCES messages(id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suggestions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('new_entry', 'variant', 'revision', 'flag')),
    entry_id TEXT NOT NULL,
    questions TEXT NOT NULL DEFAULT '[]',  -- JSON list: the wordings to add (new entry, variant)
    answer TEXT NOT NULL DEFAULT '',       -- the proposed answer (new entry, revision)
    previous TEXT NOT NULL DEFAULT '',     -- the entry's answer before a revision, for undo
    evidence TEXT NOT NULL DEFAULT '{}',   -- JSON {conversations, count, first, last, ...}
    fingerprint TEXT NOT NULL UNIQUE,      -- kind, entry and evidence: the same evidence is never proposed twice
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected', 'reverted')),
    created_at TEXT NOT NULL,
    decided_at TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS csat(              -- the customer's 1-5 rating of a closed conversation: one each
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS after_hours(       -- the latest hand-off of a conversation outside serve.business_hours
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id),
    opens_at TEXT NOT NULL,                   -- when the team is back (UTC)
    created_at TEXT NOT NULL
);
-- An address a customer left for the answer to an out-of-hours hand-off: read only by `contact_email` (the agent
-- answering), never by exports, training data, analytics or webhooks.
CREATE TABLE IF NOT EXISTS contact_emails(
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id),
    email TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class LogError(ValueError):
    """A log operation refused (unknown conversation or message, bad value); one line."""


@dataclass
class LoggedMessage:
    id: int
    conversation_id: str
    role: str
    text: str
    sources: list[dict] = field(default_factory=list)
    confidence: float | None = None
    grounding: float | None = None
    handed_off: bool = False
    reason: str = ""
    mode: str = ""
    draft: str = ""
    model: str = ""
    prompt_tokens: int = 0
    reply_tokens: int = 0
    latency_ms: float | None = None
    created_at: str = ""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ConversationLog:
    def __init__(self, path: Path, redact_kinds: list[str] | tuple[str, ...] = ("email", "phone", "card", "iban")):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.redact_kinds = tuple(redact_kinds)
        redact("", self.redact_kinds)  # an unknown kind fails here, at start-up
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """All-or-nothing for multi-statement writes; nested uses join the outer transaction."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, args=()) -> int:
        with self._lock:
            return self._db.execute(sql, args).lastrowid

    def _rows(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def redact(self, text: str) -> str:
        return redact(text, self.redact_kinds) if self.redact_kinds else text

    # --- conversations ----------------------------------------------------------------------------

    def start(self, channel: str) -> str:
        conversation_id = uuid.uuid4().hex
        stamp = now()
        self._write("INSERT INTO conversations VALUES (?, ?, 'open', ?, ?)", (conversation_id, channel, stamp, stamp))
        return conversation_id

    def conversation(self, conversation_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return rows[0] if rows else None

    def set_status(self, conversation_id: str, status: str) -> None:
        if status not in STATUSES:
            raise LogError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        with self._lock:
            changed = self._db.execute(
                "UPDATE conversations SET status = ?, updated_at = ? WHERE id = ?", (status, now(), conversation_id)
            ).rowcount
        if not changed:
            raise LogError(f"no conversation {conversation_id!r}")

    def conversations(self, status: str | None = None, limit: int = 1000) -> list[dict]:
        where = "WHERE status = ?" if status else ""
        return self._rows(f"SELECT * FROM conversations {where} ORDER BY created_at LIMIT ?", ((status,) if status else ()) + (limit,))

    # --- messages ---------------------------------------------------------------------------------

    def add_message(self, conversation_id: str, role: str, text: str, **fields) -> int:
        """Store one message (customer and agent text redacted); returns its id."""
        if role != "bot":
            text = self.redact(text)
        if "sources" in fields:
            fields["sources"] = json.dumps(fields["sources"])
        columns = ["conversation_id", "role", "text", "created_at", *fields]
        marks = ",".join("?" * len(columns))
        with self._transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            message_id = self._write(
                f"INSERT INTO messages({','.join(columns)}) VALUES ({marks})",
                (conversation_id, role, text, now(), *fields.values()),
            )
            self._write("UPDATE conversations SET updated_at = ? WHERE id = ?", (now(), conversation_id))
        return message_id

    def message(self, message_id: int) -> LoggedMessage | None:
        rows = self._rows("SELECT * FROM messages WHERE id = ?", (message_id,))
        return _message(rows[0]) if rows else None

    def history(self, conversation_id: str) -> list[LoggedMessage]:
        return [_message(r) for r in self._rows("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,))]

    # --- feedback and agent actions ---------------------------------------------------------------

    def add_feedback(self, message_id: int, thumbs_up: bool | None, comment: str = "") -> int:
        """The customer's rating of a bot reply and its comment, as one action: it replaces the reply's earlier
        rating (thumbs_up None clears it). Returns the feedback id, 0 when cleared."""
        message = self.message(message_id)
        if message is None or message.role != "bot":
            raise LogError(f"message {message_id}: no bot reply with that id to rate")
        _check_length("comment", comment)
        with self._transaction():
            self._write("DELETE FROM feedback WHERE message_id = ?", (message_id,))
            if thumbs_up is None:
                return 0
            return self._write(
                "INSERT INTO feedback(message_id, rating, comment, created_at) VALUES (?, ?, ?, ?)",
                (message_id, 1 if thumbs_up else -1, self.redact(comment.strip()), now()),
            )

    def ratings(self, conversation_id: str) -> dict[int, dict]:
        """The rating and comment of each rated bot reply of a conversation, by message id."""
        rows = self._rows("SELECT f.message_id, f.rating, f.comment FROM feedback f JOIN messages m ON m.id = f.message_id"
                          " WHERE m.conversation_id = ? ORDER BY f.id", (conversation_id,))
        return {r["message_id"]: {"rating": r["rating"], "comment": r["comment"]} for r in rows}

    def add_agent_action(self, conversation_id: str, draft_message_id: int | None, final: str, action: str,
                         agent: str = "", draft: str | None = None) -> int:
        """Record what the agent did with the bot's draft and send `final` to the customer as an agent message.

        The draft is the bot message's text unless given (a suggestion made for the agent, never sent)."""
        if action not in ACTIONS:
            raise LogError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
        if not final.strip():
            raise LogError("the reply to send is empty")
        _check_length("reply", final)
        if not self.conversation(conversation_id):
            raise LogError(f"no conversation {conversation_id!r}")
        if draft_message_id is not None:
            message = self.message(draft_message_id)
            if message is None or message.conversation_id != conversation_id or message.role != "bot":
                raise LogError(f"message {draft_message_id}: not a bot draft in conversation {conversation_id!r}")
            draft = (message.draft or message.text) if draft is None else draft
        with self._transaction():
            reply_id = self.add_message(conversation_id, "agent", final.strip())
            return self._write(
                "INSERT INTO agent_actions(conversation_id, draft_message_id, draft, final, action, agent, reply_message_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, draft_message_id, draft or "", self.message(reply_id).text, action, agent, reply_id, now()),
            )

    # --- what agents and ops read -----------------------------------------------------------------

    def awaiting_reply(self) -> list[dict]:
        """Unresolved conversations whose last message is not an agent's, with that message's fields
        (oldest first): the candidates for the agents' queue."""
        return self._rows(
            """SELECT c.id, c.channel, c.status, c.created_at, m.role AS last_role, m.id AS last_message_id,
                      m.confidence AS last_confidence, m.created_at AS last_at,
                      (SELECT MIN(rating) FROM feedback WHERE message_id = m.id) AS last_rating,
                      (SELECT text FROM messages WHERE conversation_id = c.id AND role = 'customer' ORDER BY id DESC LIMIT 1) AS last_customer,
                      (SELECT MIN(created_at) FROM messages WHERE conversation_id = c.id AND role = 'customer'
                         AND id > COALESCE((SELECT MAX(id) FROM messages WHERE conversation_id = c.id AND role = 'agent'), 0)) AS waiting_since
               FROM conversations c JOIN messages m ON m.id = (SELECT MAX(id) FROM messages WHERE conversation_id = c.id)
               WHERE c.status != 'resolved' AND m.role != 'agent' AND c.channel != 'eval'
               ORDER BY waiting_since"""
        )

    def daily_conversations(self, days: int = 30) -> list[dict]:
        return self._rows(
            "SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS conversations FROM conversations"
            " WHERE created_at >= date('now', ?) AND channel != 'eval' GROUP BY day ORDER BY day", (f"-{days} days",)
        )

    def status_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT status, COUNT(*) AS n FROM conversations WHERE channel != 'eval' GROUP BY status")
        return {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in rows}

    def rating_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT rating, COUNT(*) AS n FROM feedback GROUP BY rating")
        counts = {r["rating"]: r["n"] for r in rows}
        return {"up": counts.get(1, 0), "down": counts.get(-1, 0)}

    def bot_latencies(self) -> list[float]:
        return [r["latency_ms"] for r in self._rows("SELECT latency_ms FROM messages WHERE role = 'bot' AND latency_ms IS NOT NULL")]

    def unanswered_questions(self, limit: int = 50) -> list[dict]:
        """Customer questions the bot handed off for want of an answer in the knowledge base: the gaps to fill
        (not small talk, nor questions outside the shop's subject)."""
        return self._rows(
            """SELECT q.text AS question, COUNT(*) AS times, MAX(q.created_at) AS last_asked
               FROM messages b JOIN messages q ON q.id = (SELECT MAX(id) FROM messages WHERE conversation_id = b.conversation_id
                                                          AND role = 'customer' AND id < b.id)
               WHERE b.role = 'bot' AND b.reason IN ('low_confidence', 'not_grounded', 'model_handoff')
               GROUP BY lower(q.text) ORDER BY times DESC, last_asked DESC LIMIT ?""",
            (limit,),
        )

    def handoff_reasons(self, conversation_ids: list[str]) -> dict[str, str]:
        """Why each of these conversations went to a person: the reason of its latest hand-off, not counting the
        acknowledgements of messages the customer sent while waiting (they repeat the hand-off, not its cause)."""
        if not conversation_ids:
            return {}
        marks = ",".join("?" * len(conversation_ids))
        rows = self._rows(
            f"""SELECT conversation_id, reason FROM messages
                WHERE role = 'bot' AND handed_off = 1 AND reason NOT IN ('', 'waiting_for_agent')
                  AND conversation_id IN ({marks}) ORDER BY id""",
            tuple(conversation_ids),
        )
        return {r["conversation_id"]: r["reason"] for r in rows}  # the latest wins

    def most_cited_entries(self, recent: int = 2000) -> list[str]:
        """Entry ids by how often they were the first source of the bot's latest `recent` answers, most first."""
        return [entry_id for entry_id, _ in self.answers_by_entry(recent).most_common()]

    def agent_answers(self) -> list[dict]:
        """Every agent reply (not in evaluation conversations) with the customer question it answered and the
        bot's own reply to that question: what the learning loop reads agents' knowledge from."""
        return self._rows(
            """SELECT a.conversation_id, a.action, a.final, a.draft, a.created_at, q.text AS question,
                      b.id AS bot_id, b.reason AS bot_reason, b.handed_off AS bot_handed_off, b.mode AS bot_mode, b.sources AS bot_sources
               FROM agent_actions a JOIN conversations c ON c.id = a.conversation_id AND c.channel != 'eval'
               JOIN messages q ON q.id = (SELECT MAX(id) FROM messages WHERE conversation_id = a.conversation_id
                                          AND role = 'customer' AND id < a.reply_message_id)
               LEFT JOIN messages b ON b.id = (SELECT MAX(id) FROM messages WHERE conversation_id = a.conversation_id
                                               AND role = 'bot' AND id > q.id AND id < a.reply_message_id)
               ORDER BY a.id"""
        )

    def rated_answers(self) -> list[dict]:
        """Every rated bot answer (not a policy reply) with the question it answered."""
        return self._rows(
            """SELECT b.conversation_id, f.rating, f.created_at, q.text AS question, b.sources AS bot_sources, b.mode AS bot_mode
               FROM feedback f JOIN messages b ON b.id = f.message_id
               JOIN conversations c ON c.id = b.conversation_id AND c.channel != 'eval'
               JOIN messages q ON q.id = (SELECT MAX(id) FROM messages WHERE conversation_id = b.conversation_id
                                          AND role = 'customer' AND id < b.id)
               WHERE b.reason = '' AND b.handed_off = 0 AND b.sources != '[]' ORDER BY f.id"""
        )

    def answers_by_entry(self, recent: int = -1) -> Counter:
        """How many of the bot's latest `recent` answers (all: -1; not evaluation ones) each entry was the first
        source of."""
        rows = self._rows("SELECT m.sources FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'bot'"
                          " AND m.reason = '' AND m.handed_off = 0 AND m.sources != '[]' AND c.channel != 'eval'"
                          " ORDER BY m.id DESC LIMIT ?", (recent,))
        return Counter(json.loads(r["sources"])[0]["id"] for r in rows)

    def feedback(self) -> list[dict]:
        return self._rows("SELECT * FROM feedback ORDER BY id")

    # --- conversation ratings (CSAT), out-of-hours hand-offs, idle conversations ----------------------

    def set_csat(self, conversation_id: str, score: int, comment: str = "", at: str | None = None) -> None:
        """The customer's 1-5 rating of the conversation and its comment (redacted): it replaces an earlier one."""
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise LogError(f"rating {score!r}: expected a whole number from 1 to 5")
        _check_length("comment", comment)
        with self._transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            self._write("INSERT OR REPLACE INTO csat(conversation_id, score, comment, created_at) VALUES (?, ?, ?, ?)",
                        (conversation_id, score, self.redact(comment.strip()), at or now()))

    def csat(self, conversation_id: str) -> dict | None:
        """{score, comment, created_at} of the conversation's rating; None when it has none."""
        rows = self._rows("SELECT score, comment, created_at FROM csat WHERE conversation_id = ?", (conversation_id,))
        return rows[0] if rows else None

    def csat_ratings(self, days: int = 30) -> list[dict]:
        """The conversation ratings of the last `days` days (not evaluation ones), oldest first: day, score and the
        conversation's outcome, "handed_off" when a person took part (a hand-off, or an agent's reply), else "bot"."""
        return self._rows(
            """SELECT substr(s.created_at, 1, 10) AS day, s.score,
                      CASE WHEN EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = s.conversation_id
                                        AND (m.handed_off = 1 OR m.role = 'agent')) THEN 'handed_off' ELSE 'bot' END AS outcome
               FROM csat s JOIN conversations c ON c.id = s.conversation_id AND c.channel != 'eval'
               WHERE s.created_at >= date('now', ?) ORDER BY s.created_at""", (f"-{days} days",))

    def mark_after_hours(self, conversation_id: str, opens_at: str) -> None:
        """The conversation was handed off while nobody was in; the team is back at `opens_at` (ISO, UTC)."""
        self._write("INSERT OR REPLACE INTO after_hours(conversation_id, opens_at, created_at) VALUES (?, ?, ?)",
                    (conversation_id, opens_at, now()))

    def after_hours_waiting(self, conversation_ids: list[str] | None = None) -> dict[str, str]:
        """Conversations handed off outside business hours that no agent has answered since (of these ids; all:
        None), with when the team is back (ISO, UTC)."""
        if conversation_ids is not None and not conversation_ids:
            return {}
        where = f"AND a.conversation_id IN ({','.join('?' * len(conversation_ids))})" if conversation_ids else ""
        rows = self._rows(
            f"""SELECT a.conversation_id, a.opens_at FROM after_hours a
                WHERE a.created_at > COALESCE((SELECT MAX(created_at) FROM messages
                                               WHERE conversation_id = a.conversation_id AND role = 'agent'), '') {where}""",
            tuple(conversation_ids or ()))
        return {r["conversation_id"]: r["opens_at"] for r in rows}

    def set_contact_email(self, conversation_id: str, email: str) -> None:
        """Keep the address a customer left for the answer (one per conversation: a second replaces it). It is stored
        apart from the messages, so exports, training data, analytics and webhooks never read it."""
        with self._transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            self._write("INSERT OR REPLACE INTO contact_emails(conversation_id, email, created_at) VALUES (?, ?, ?)",
                        (conversation_id, email, now()))

    def contact_email(self, conversation_id: str) -> str:
        rows = self._rows("SELECT email FROM contact_emails WHERE conversation_id = ?", (conversation_id,))
        return rows[0]["email"] if rows else ""

    def idle_conversations(self, before: str, conversation_id: str | None = None) -> list[str]:
        """Open customer-page and widget conversations (channel web) whose latest customer message (else their start)
        is older than `before` (ISO, UTC): of all, or only `conversation_id`."""
        which = "c.id = ?" if conversation_id else "c.status = 'open'"  # one conversation by its key, not a scan
        return [r["id"] for r in self._rows(
            f"""SELECT c.id FROM conversations c WHERE {which} AND c.status = 'open' AND c.channel = 'web'
                  AND COALESCE((SELECT MAX(created_at) FROM messages WHERE conversation_id = c.id AND role = 'customer'),
                               c.created_at) < ? ORDER BY c.created_at""", ((conversation_id,) if conversation_id else ()) + (before,))]

    def close_if_open(self, conversation_id: str) -> bool:
        """Resolve the conversation if it is still open (not if a hand-off came first); whether it was."""
        with self._lock:
            return self._db.execute("UPDATE conversations SET status = 'resolved', updated_at = ? WHERE id = ? AND status = 'open'",
                                    (now(), conversation_id)).rowcount == 1

    def agent_actions(self) -> list[dict]:
        return self._rows("SELECT * FROM agent_actions ORDER BY id")


    # --- suggestions (training/suggestions.py proposes them; ops accept or reject) ----------------------

    def sync_suggestions(self, proposed: list[dict]) -> list[int]:
        """Make the open suggestions exactly `proposed` (dicts with the table's columns): an open one proposed
        again keeps its id, one no longer proposed goes, and evidence already decided on (accepted, rejected,
        reverted) is not proposed again. Returns the ids of the new ones."""
        fingerprints = {p["fingerprint"] for p in proposed}
        with self._transaction():
            known = {r["fingerprint"] for r in self._rows("SELECT fingerprint FROM suggestions")}
            for row in self._rows("SELECT id, fingerprint FROM suggestions WHERE status = 'open'"):
                if row["fingerprint"] not in fingerprints:
                    self._write("DELETE FROM suggestions WHERE id = ?", (row["id"],))
            added = []
            for p in proposed:
                if p["fingerprint"] not in known:
                    known.add(p["fingerprint"])
                    added.append(self._write(
                        "INSERT INTO suggestions(kind, entry_id, questions, answer, previous, evidence, fingerprint, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (p["kind"], p["entry_id"], json.dumps(p.get("questions", [])), p.get("answer", ""), p.get("previous", ""),
                         json.dumps(p.get("evidence", {})), p["fingerprint"], now())))
        return added

    def suggestions(self, status: str | None = None, kind: str | None = None) -> list[dict]:
        """Newest first, then the most asked."""
        rows = self._rows("SELECT * FROM suggestions WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?) ORDER BY id DESC",
                          (status, status, kind, kind))
        return sorted(map(_suggestion, rows), key=lambda r: (r["created_at"][:10], r["evidence"].get("count", 0)), reverse=True)

    def suggestion(self, suggestion_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM suggestions WHERE id = ?", (suggestion_id,))
        return _suggestion(rows[0]) if rows else None

    def decide_suggestion(self, suggestion_id: int, status: str, by: str = "", before: str = "open", **changes) -> bool:
        """Move a suggestion from `before` to `status` (with edited `answer`, `questions` or `previous`); False
        when it is not in `before` any more (another process decided first), so a decision is taken once."""
        if "questions" in changes:
            changes["questions"] = json.dumps(changes["questions"])
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._lock:
            return self._db.execute(
                f"UPDATE suggestions SET status = ?, decided_at = ?, decided_by = ?{', ' + sets if sets else ''}"
                " WHERE id = ? AND status = ?", (status, now(), by, *changes.values(), suggestion_id, before)).rowcount == 1


def _suggestion(row: dict) -> dict:
    return {**row, "questions": json.loads(row["questions"]), "evidence": json.loads(row["evidence"])}


def _check_length(what: str, text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise LogError(f"the {what} has {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}")


def _message(row: dict) -> LoggedMessage:
    row = dict(row)
    row["sources"] = json.loads(row["sources"] or "[]")
    row["handed_off"] = bool(row["handed_off"])
    return LoggedMessage(**row)
