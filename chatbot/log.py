"""The conversation log: the source of truth for agents, analytics and training. A SQLite file under the home
(the embedded default), or a PostgreSQL database that several app replicas share (`storage.database_url`).

Customer and agent text is redacted before it is stored, so personal data never reaches the disk.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from retrieval.database import Database, copy_tables, import_file, migrate

from .redact import redact

STATUSES = ("open", "handed_off", "resolved")
ACTIONS = ("approved", "edited", "rejected")
# Agents' replies and customers' comments: far above any real one, and a bound on what one call stores.
MAX_TEXT_CHARS = 10_000

MIGRATIONS = Path(__file__).parent / "migrations"  # the schema: Alembic scripts, run when a log is opened
# What `db copy` moves (parents before children); staff sessions, rate-limit windows and leases are left behind.
TABLES = ("conversations", "messages", "feedback", "agent_actions", "suggestions", "csat", "after_hours", "contact_emails",
          "api_keys", "webhook_deliveries", "staff_accounts", "model_versions", "serving", "serving_history")
# Tables older versions kept in files of their own under the home: moved into the app's database once.
LEGACY_FILES = {"api_keys": "apikeys.sqlite", "webhook_deliveries": "webhooks.sqlite"}


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


def open_database(target: Path | str) -> Database:
    """The app's shared database (a SQLite file, or a postgresql:// URL), its schema brought up to date: the log's
    tables and those of staff sessions, rate limits, leases, API keys and webhook deliveries."""
    db = Database(target)
    try:
        migrate(db, MIGRATIONS)
    except BaseException:
        db.close()
        raise
    return db


def import_legacy(db: Database, home: Path) -> None:
    """Move the tables an older version kept in their own files under `home` into `db` (once)."""
    for table, name in LEGACY_FILES.items():
        import_file(db, home / name, table)


class ConversationLog:
    def __init__(self, target: Path | str, redact_kinds: list[str] | tuple[str, ...] = ("email", "phone", "card", "iban")):
        """`target`: a SQLite file, or a postgresql:// URL. The schema is brought up to date on opening."""
        self.redact_kinds = tuple(redact_kinds)
        redact("", self.redact_kinds)  # an unknown kind fails here, at start-up
        self.db = open_database(target)

    def close(self) -> None:
        self.db.close()

    def redact(self, text: str) -> str:
        return redact(text, self.redact_kinds) if self.redact_kinds else text

    # --- conversations ----------------------------------------------------------------------------

    def start(self, channel: str) -> str:
        conversation_id = uuid.uuid4().hex
        stamp = now()
        self.db.execute("INSERT INTO conversations(id, channel, status, created_at, updated_at) VALUES (:id, :channel, 'open', :at, :at)",
                        id=conversation_id, channel=channel, at=stamp)
        return conversation_id

    def conversation(self, conversation_id: str) -> dict | None:
        rows = self.db.rows("SELECT * FROM conversations WHERE id = :id", id=conversation_id)
        return rows[0] if rows else None

    def set_status(self, conversation_id: str, status: str) -> None:
        if status not in STATUSES:
            raise LogError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        if not self.db.execute("UPDATE conversations SET status = :status, updated_at = :at WHERE id = :id",
                               status=status, at=now(), id=conversation_id):
            raise LogError(f"no conversation {conversation_id!r}")

    def conversations(self, status: str | None = None, limit: int = 1000) -> list[dict]:
        where = "WHERE status = :status" if status else ""
        return self.db.rows(f"SELECT * FROM conversations {where} ORDER BY created_at LIMIT :limit", status=status, limit=limit)

    # --- messages ---------------------------------------------------------------------------------

    def add_message(self, conversation_id: str, role: str, text: str, **fields) -> int:
        """Store one message (customer and agent text redacted); returns its id."""
        if role != "bot":
            text = self.redact(text)
        if "sources" in fields:
            fields["sources"] = json.dumps(fields["sources"])
        values = {"conversation_id": conversation_id, "role": role, "text": text, "created_at": now(), **fields}
        with self.db.transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            message_id = self.db.insert(f"INSERT INTO messages({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})",
                                        **values)
            self.db.execute("UPDATE conversations SET updated_at = :at WHERE id = :id", at=now(), id=conversation_id)
        return message_id

    def message(self, message_id: int) -> LoggedMessage | None:
        rows = self.db.rows("SELECT * FROM messages WHERE id = :id", id=message_id)
        return _message(rows[0]) if rows else None

    def history(self, conversation_id: str) -> list[LoggedMessage]:
        return [_message(r) for r in self.db.rows("SELECT * FROM messages WHERE conversation_id = :id ORDER BY id", id=conversation_id)]

    # --- feedback and agent actions ---------------------------------------------------------------

    def add_feedback(self, message_id: int, thumbs_up: bool | None, comment: str = "") -> int:
        """The customer's rating of a bot reply and its comment, as one action: it replaces the reply's earlier
        rating (thumbs_up None clears it). Returns the feedback id, 0 when cleared."""
        message = self.message(message_id)
        if message is None or message.role != "bot":
            raise LogError(f"message {message_id}: no bot reply with that id to rate")
        _check_length("comment", comment)
        with self.db.transaction():
            self.db.execute("DELETE FROM feedback WHERE message_id = :id", id=message_id)
            if thumbs_up is None:
                return 0
            return self.db.insert("INSERT INTO feedback(message_id, rating, comment, created_at) VALUES (:id, :rating, :comment, :at)",
                                  id=message_id, rating=1 if thumbs_up else -1, comment=self.redact(comment.strip()), at=now())

    def ratings(self, conversation_id: str) -> dict[int, dict]:
        """The rating and comment of each rated bot reply of a conversation, by message id."""
        rows = self.db.rows("SELECT f.message_id, f.rating, f.comment FROM feedback f JOIN messages m ON m.id = f.message_id"
                            " WHERE m.conversation_id = :id ORDER BY f.id", id=conversation_id)
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
        with self.db.transaction():
            reply_id = self.add_message(conversation_id, "agent", final.strip())
            return self.db.insert(
                "INSERT INTO agent_actions(conversation_id, draft_message_id, draft, final, action, agent, reply_message_id, created_at)"
                " VALUES (:conversation, :draft_id, :draft, :final, :action, :agent, :reply, :at)",
                conversation=conversation_id, draft_id=draft_message_id, draft=draft or "", final=self.message(reply_id).text,
                action=action, agent=agent, reply=reply_id, at=now())

    # --- what agents and ops read -----------------------------------------------------------------

    def awaiting_reply(self) -> list[dict]:
        """Unresolved conversations whose last message is not an agent's, with that message's fields
        (oldest first): the candidates for the agents' queue."""
        return self.db.rows(
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
        return self.db.rows(
            "SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS conversations FROM conversations"
            " WHERE created_at >= :since AND channel != 'eval' GROUP BY day ORDER BY day", since=_days_ago(days))

    def status_counts(self) -> dict[str, int]:
        rows = self.db.rows("SELECT status, COUNT(*) AS n FROM conversations WHERE channel != 'eval' GROUP BY status")
        return {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in rows}

    def rating_counts(self) -> dict[str, int]:
        rows = self.db.rows("SELECT rating, COUNT(*) AS n FROM feedback GROUP BY rating")
        counts = {r["rating"]: r["n"] for r in rows}
        return {"up": counts.get(1, 0), "down": counts.get(-1, 0)}

    def bot_latencies(self) -> list[float]:
        return [r["latency_ms"] for r in self.db.rows("SELECT latency_ms FROM messages WHERE role = 'bot' AND latency_ms IS NOT NULL")]

    def unanswered_questions(self, limit: int = 50) -> list[dict]:
        """Customer questions the bot handed off for want of an answer in the knowledge base: the gaps to fill
        (not small talk, nor questions outside the shop's subject)."""
        return self.db.rows(
            """SELECT MIN(q.text) AS question, COUNT(*) AS times, MAX(q.created_at) AS last_asked
               FROM messages b JOIN messages q ON q.id = (SELECT MAX(id) FROM messages WHERE conversation_id = b.conversation_id
                                                          AND role = 'customer' AND id < b.id)
               WHERE b.role = 'bot' AND b.reason IN ('low_confidence', 'not_grounded', 'model_handoff')
               GROUP BY lower(q.text) ORDER BY times DESC, last_asked DESC LIMIT :limit""", limit=limit)

    def handoff_reasons(self, conversation_ids: list[str]) -> dict[str, str]:
        """Why each of these conversations went to a person: the reason of its latest hand-off, not counting the
        acknowledgements of messages the customer sent while waiting (they repeat the hand-off, not its cause)."""
        if not conversation_ids:
            return {}
        rows = self.db.rows(
            """SELECT conversation_id, reason FROM messages
               WHERE role = 'bot' AND handed_off = 1 AND reason NOT IN ('', 'waiting_for_agent')
                 AND conversation_id IN :ids ORDER BY id""", ids=list(conversation_ids))
        return {r["conversation_id"]: r["reason"] for r in rows}  # the latest wins

    def most_cited_entries(self, recent: int = 2000) -> list[str]:
        """Entry ids by how often they were the first source of the bot's latest `recent` answers, most first."""
        return [entry_id for entry_id, _ in self.answers_by_entry(recent).most_common()]

    def agent_answers(self) -> list[dict]:
        """Every agent reply (not in evaluation conversations) with the customer question it answered and the
        bot's own reply to that question: what the learning loop reads agents' knowledge from."""
        return self.db.rows(
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
        return self.db.rows(
            """SELECT b.conversation_id, f.rating, f.created_at, q.text AS question, b.sources AS bot_sources, b.mode AS bot_mode
               FROM feedback f JOIN messages b ON b.id = f.message_id
               JOIN conversations c ON c.id = b.conversation_id AND c.channel != 'eval'
               JOIN messages q ON q.id = (SELECT MAX(id) FROM messages WHERE conversation_id = b.conversation_id
                                          AND role = 'customer' AND id < b.id)
               WHERE b.reason = '' AND b.handed_off = 0 AND b.sources != '[]' ORDER BY f.id"""
        )

    def decision_outcomes(self) -> list[dict]:
        """What people said of the bot's answer-or-hand-off decisions (not evaluation ones), oldest first: the
        reply's retrieval confidence, whether it handed off for low confidence, and the outcome: the agent's action
        on it ("approved", "edited", "rejected") or the customer's rating ("up", "down")."""
        return self.db.rows(
            """SELECT b.id, b.confidence, b.handed_off, a.action AS outcome
               FROM agent_actions a JOIN conversations c ON c.id = a.conversation_id AND c.channel != 'eval'
               JOIN messages b ON b.id = (SELECT MAX(id) FROM messages WHERE conversation_id = a.conversation_id
                                          AND role = 'bot' AND id < a.reply_message_id)
               WHERE b.confidence IS NOT NULL AND b.reason IN ('', 'low_confidence')
               UNION ALL
               SELECT b.id, b.confidence, b.handed_off, CASE WHEN f.rating = 1 THEN 'up' ELSE 'down' END
               FROM feedback f JOIN messages b ON b.id = f.message_id
               JOIN conversations c ON c.id = b.conversation_id AND c.channel != 'eval'
               WHERE b.confidence IS NOT NULL AND b.reason = '' AND b.handed_off = 0
               ORDER BY 1""")

    def answers_by_entry(self, recent: int = -1) -> Counter:
        """How many of the bot's latest `recent` answers (all: -1; not evaluation ones) each entry was the first
        source of."""
        limit = "LIMIT :recent" if recent >= 0 else ""
        rows = self.db.rows("SELECT m.sources FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'bot'"
                            " AND m.reason = '' AND m.handed_off = 0 AND m.sources != '[]' AND c.channel != 'eval'"
                            f" ORDER BY m.id DESC {limit}", recent=recent)
        return Counter(json.loads(r["sources"])[0]["id"] for r in rows)

    def feedback(self) -> list[dict]:
        return self.db.rows("SELECT * FROM feedback ORDER BY id")

    # --- conversation ratings (CSAT), out-of-hours hand-offs, idle conversations ----------------------

    def set_csat(self, conversation_id: str, score: int, comment: str = "", at: str | None = None) -> None:
        """The customer's 1-5 rating of the conversation and its comment (redacted): it replaces an earlier one."""
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise LogError(f"rating {score!r}: expected a whole number from 1 to 5")
        _check_length("comment", comment)
        with self.db.transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            self.db.upsert("csat", "conversation_id", conversation_id=conversation_id, score=score,
                           comment=self.redact(comment.strip()), created_at=at or now())

    def csat(self, conversation_id: str) -> dict | None:
        """{score, comment, created_at} of the conversation's rating; None when it has none."""
        rows = self.db.rows("SELECT score, comment, created_at FROM csat WHERE conversation_id = :id", id=conversation_id)
        return rows[0] if rows else None

    def csat_ratings(self, days: int = 30) -> list[dict]:
        """The conversation ratings of the last `days` days (not evaluation ones), oldest first: day, score and the
        conversation's outcome, "handed_off" when a person took part (a hand-off, or an agent's reply), else "bot"."""
        return self.db.rows(
            """SELECT substr(s.created_at, 1, 10) AS day, s.score,
                      CASE WHEN EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = s.conversation_id
                                        AND (m.handed_off = 1 OR m.role = 'agent')) THEN 'handed_off' ELSE 'bot' END AS outcome
               FROM csat s JOIN conversations c ON c.id = s.conversation_id AND c.channel != 'eval'
               WHERE s.created_at >= :since ORDER BY s.created_at""", since=_days_ago(days))

    def mark_after_hours(self, conversation_id: str, opens_at: str) -> None:
        """The conversation was handed off while nobody was in; the team is back at `opens_at` (ISO, UTC)."""
        self.db.upsert("after_hours", "conversation_id", conversation_id=conversation_id, opens_at=opens_at, created_at=now())

    def after_hours_waiting(self, conversation_ids: list[str] | None = None) -> dict[str, str]:
        """Conversations handed off outside business hours that no agent has answered since (of these ids; all:
        None), with when the team is back (ISO, UTC)."""
        if conversation_ids is not None and not conversation_ids:
            return {}
        where = "AND a.conversation_id IN :ids" if conversation_ids else ""
        rows = self.db.rows(
            f"""SELECT a.conversation_id, a.opens_at FROM after_hours a
                WHERE a.created_at > COALESCE((SELECT MAX(created_at) FROM messages
                                               WHERE conversation_id = a.conversation_id AND role = 'agent'), '') {where}""",
            **({"ids": list(conversation_ids)} if conversation_ids else {}))
        return {r["conversation_id"]: r["opens_at"] for r in rows}

    def set_contact_email(self, conversation_id: str, email: str) -> None:
        """Keep the address a customer left for the answer (one per conversation: a second replaces it). It is stored
        apart from the messages, so exports, training data, analytics and webhooks never read it."""
        with self.db.transaction():
            if not self.conversation(conversation_id):
                raise LogError(f"no conversation {conversation_id!r}")
            self.db.upsert("contact_emails", "conversation_id", conversation_id=conversation_id, email=email, created_at=now())

    def contact_email(self, conversation_id: str) -> str:
        rows = self.db.rows("SELECT email FROM contact_emails WHERE conversation_id = :id", id=conversation_id)
        return rows[0]["email"] if rows else ""

    def idle_conversations(self, before: str, conversation_id: str | None = None) -> list[str]:
        """Open customer-page and widget conversations (channel web) whose latest customer message (else their start)
        is older than `before` (ISO, UTC): of all, or only `conversation_id`."""
        which = "c.id = :id" if conversation_id else "c.status = 'open'"  # one conversation by its key, not a scan
        return [r["id"] for r in self.db.rows(
            f"""SELECT c.id FROM conversations c WHERE {which} AND c.status = 'open' AND c.channel = 'web'
                  AND COALESCE((SELECT MAX(created_at) FROM messages WHERE conversation_id = c.id AND role = 'customer'),
                               c.created_at) < :before ORDER BY c.created_at""", id=conversation_id, before=before)]

    def close_if_open(self, conversation_id: str) -> bool:
        """Resolve the conversation if it is still open (not if a hand-off came first); whether it was."""
        return self.db.execute("UPDATE conversations SET status = 'resolved', updated_at = :at WHERE id = :id AND status = 'open'",
                               at=now(), id=conversation_id) == 1

    def agent_actions(self) -> list[dict]:
        return self.db.rows("SELECT * FROM agent_actions ORDER BY id")

    # --- suggestions (training/suggestions.py proposes them; ops accept or reject) ----------------------

    def sync_suggestions(self, proposed: list[dict]) -> list[int]:
        """Make the open suggestions exactly `proposed` (dicts with the table's columns): an open one proposed
        again keeps its id, one no longer proposed goes, and evidence already decided on (accepted, rejected,
        reverted) is not proposed again. Returns the ids of the new ones."""
        fingerprints = {p["fingerprint"] for p in proposed}
        with self.db.transaction():
            known = {r["fingerprint"] for r in self.db.rows("SELECT fingerprint FROM suggestions")}
            for row in self.db.rows("SELECT id, fingerprint FROM suggestions WHERE status = 'open'"):
                if row["fingerprint"] not in fingerprints:
                    self.db.execute("DELETE FROM suggestions WHERE id = :id", id=row["id"])
            added = []
            for p in proposed:
                if p["fingerprint"] not in known:
                    known.add(p["fingerprint"])
                    added.append(self.db.insert(
                        "INSERT INTO suggestions(kind, entry_id, questions, answer, previous, evidence, fingerprint, created_at)"
                        " VALUES (:kind, :entry_id, :questions, :answer, :previous, :evidence, :fingerprint, :at)",
                        kind=p["kind"], entry_id=p["entry_id"], questions=json.dumps(p.get("questions", [])),
                        answer=p.get("answer", ""), previous=p.get("previous", ""), evidence=json.dumps(p.get("evidence", {})),
                        fingerprint=p["fingerprint"], at=now()))
        return added

    def suggestions(self, status: str | None = None, kind: str | None = None) -> list[dict]:
        """Newest first, then the most asked."""
        where = " AND ".join(f"{column} = :{column}" for column, value in (("status", status), ("kind", kind)) if value)
        rows = self.db.rows(f"SELECT * FROM suggestions {'WHERE ' + where if where else ''} ORDER BY id DESC", status=status, kind=kind)
        return sorted(map(_suggestion, rows), key=lambda r: (r["created_at"][:10], r["evidence"].get("count", 0)), reverse=True)

    def suggestion(self, suggestion_id: int) -> dict | None:
        rows = self.db.rows("SELECT * FROM suggestions WHERE id = :id", id=suggestion_id)
        return _suggestion(rows[0]) if rows else None

    def decide_suggestion(self, suggestion_id: int, status: str, by: str = "", before: str = "open", **changes) -> bool:
        """Move a suggestion from `before` to `status` (with edited `answer`, `questions` or `previous`); False
        when it is not in `before` any more (another process decided first), so a decision is taken once."""
        unknown = set(changes) - {"answer", "questions", "previous"}
        if unknown:
            raise LogError(f"suggestion fields {', '.join(sorted(unknown))}: only answer, questions and previous change")
        if "questions" in changes:
            changes["questions"] = json.dumps(changes["questions"])
        sets = "".join(f", {k} = :{k}" for k in changes)
        return self.db.execute(
            f"UPDATE suggestions SET status = :status, decided_at = :at, decided_by = :by{sets} WHERE id = :id AND status = :before",
            status=status, at=now(), by=by, id=suggestion_id, before=before, **changes) == 1


def upgrade(target: Path | str) -> dict:
    """`supportbot db upgrade`: bring the app's database to the newest schema; {database, from, to}."""
    db = Database(target)
    try:
        before, after = migrate(db, MIGRATIONS)
        return {"database": str(db), "from": before, "to": after}
    finally:
        db.close()


def copy_log(source: Path, target: str) -> dict:
    """`supportbot db copy --to URL`: the home's SQLite database (the log, API keys, webhook deliveries) into a new,
    empty database (PostgreSQL), checked by each table's row count and checksum; {database, tables: {name: {rows,
    checksum}}}."""
    if not source.exists():  # a home with no conversations yet: the tables are made, empty
        log = ConversationLog(target, redact_kinds=())
        log.close()
        return {"database": str(log.db), "tables": {}}
    logs = [ConversationLog(source, redact_kinds=()), ConversationLog(target, redact_kinds=())]
    import_legacy(logs[0].db, source.parent)
    try:
        return {"database": str(logs[1].db), "tables": copy_tables(logs[0].db, logs[1].db, list(TABLES))}
    finally:
        for log in logs:
            log.close()


def _days_ago(days: int) -> str:
    """The day `days` days ago (UTC), as stored timestamps begin: they compare as text."""
    return (datetime.now(timezone.utc) - timedelta(days=days)).date().isoformat()


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
