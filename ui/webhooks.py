"""Webhooks: the conversation events a helpdesk acts on (`handoff`, `agent_reply`, `closed`, `rated`) POSTed as
signed JSON to the receivers of `serve.webhooks` (docs/operations.md#webhooks).

`emit` records each delivery and returns: one background worker per receiver sends it, retrying with backoff on
connection errors, timeouts, 5xx and 429, so a slow, failing or hanging receiver never delays a customer's reply
nor the other receivers. Deliveries are rows of the shared database (`webhook_deliveries`): operations data, not
conversations (exports and training never read them). A delivery still pending when the server stops is sent
when it starts again, by the replica that recorded it.

A receiver checks `X-Supportbot-Signature` with `verify`: the HMAC-SHA256, keyed with the receiver's secret, of
`X-Supportbot-Timestamp`, a dot and the raw body.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from chatbot import Config, ConfigError, ConversationLog
from chatbot.log import now
from chatbot.review import REASONS
from retrieval.database import Database

EVENTS = ("handoff", "agent_reply", "closed", "rated")
STATUSES = ("pending", "delivered", "failed")
KEEP_DAYS = 30  # delivered and failed deliveries older than this are forgotten at start-up
SUMMARY_MESSAGES = 6  # the latest messages a hand-off's summary holds
SUMMARY_CHARS = 300  # each cut to this many characters
USER_AGENT = "supportbot-webhooks/1"

log = logging.getLogger("supportbot.webhooks")



@dataclass(frozen=True)
class Receiver:
    url: str
    events: frozenset[str]
    secret: str = field(repr=False)


# --- configuration ----------------------------------------------------------------------------------------------


def parse_webhooks(items: list[str], env: Mapping[str, str] | None = None) -> list[Receiver]:
    """The receivers of `serve.webhooks`: "URL [events=E1+E2] secret=VALUE|env:VAR" each (events default to all)."""
    env = os.environ if env is None else env
    receivers: list[Receiver] = []
    for n, item in enumerate(items, 1):
        url, *options = str(item).split() or [""]
        where = f"serve.webhooks item {n} ({_shown(url)})"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: expected \"URL [events=handoff+closed] secret=SECRET|env:VAR\", starting with an http(s) URL")
        if any(r.url == url for r in receivers):
            raise ConfigError(f"{where}: this URL is listed twice; give it once with all its events")
        settings: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("events", "secret") or key in settings or not value:
                shown = "secret=..." if key == "secret" else _shown(option)  # a secret is never echoed
                raise ConfigError(f"{where}: {shown}: expected events=E1+E2 and secret=SECRET or secret=env:VAR, each once")
            settings[key] = value
        events = settings.get("events", "+".join(EVENTS)).split("+")
        unknown = [e for e in events if e not in EVENTS]
        if unknown:
            raise ConfigError(f"{where}: unknown event {_shown(unknown[0])}; expected some of {'+'.join(EVENTS)}")
        secret = settings.get("secret", "")
        if secret.startswith("env:"):
            name, secret = secret[4:], env.get(secret[4:], "")
            if not secret:
                raise ConfigError(f"{where}: the secret's environment variable {name} is not set")
        if not secret:
            raise ConfigError(f"{where}: give a secret (secret=SECRET or secret=env:VAR) so that the receiver can verify deliveries")
        receivers.append(Receiver(url, frozenset(events), secret))
    return receivers


def _shown(text: str) -> str:
    return repr(text[:100])


# --- signatures -------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The `X-Supportbot-Signature` value: "sha256=" and the hex HMAC-SHA256 of "<timestamp>.<raw body>"."""
    body = body.encode("utf-8") if isinstance(body, str) else body
    return "sha256=" + hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: int | str, body: bytes | str, signature: str, tolerance: float = 300,
           at: float | None = None) -> bool:
    """Whether a delivery is genuine: signed with `secret` over this timestamp and raw body, and the timestamp
    within `tolerance` seconds of now (an old delivery replayed is refused)."""
    try:
        stamp = int(str(timestamp))
    except ValueError:
        return False
    if abs((time.time() if at is None else at) - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp), body), str(signature))


# --- what each event says ---------------------------------------------------------------------------------------


def handoff_data(log: ConversationLog, conversation_id: str, reason: str) -> dict:
    """A conversation went to a person: why, the customer's last message and a link-free summary of the latest
    messages (as the log stores them: redacted)."""
    conversation = log.conversation(conversation_id) or {}
    messages = [m for m in log.history(conversation_id) if m.text]
    last = next((m.text for m in reversed(messages) if m.role == "customer"), "")
    summary = "\n".join(f"{m.role}: {_plain(m.text)}" for m in messages[-SUMMARY_MESSAGES:])
    return {"conversation_id": conversation_id, "channel": conversation.get("channel", ""), "reason": reason,
            "reason_text": REASONS.get(reason, reason), "last_customer_message": last, "summary": summary}


def agent_reply_data(log: ConversationLog, conversation_id: str, agent: str, action: str) -> dict:
    """An agent's reply as the customer got it (the log's redacted text)."""
    reply = next((m for m in reversed(log.history(conversation_id)) if m.role == "agent"), None)
    return {"conversation_id": conversation_id, "agent": agent, "action": action,
            "message_id": reply.id if reply else 0, "text": reply.text if reply else ""}


def rated_data(log: ConversationLog, message_id: int) -> dict:
    """A customer's rating of a bot reply: 1 (up), -1 (down) or 0 (cleared), with the comment as stored."""
    message = log.message(int(message_id))
    rating = log.ratings(message.conversation_id).get(message.id, {"rating": 0, "comment": ""})
    return {"conversation_id": message.conversation_id, "message_id": message.id, "rating": rating["rating"],
            "comment": rating["comment"], "reply": _plain(message.text)}


def _plain(text: str) -> str:
    """One line without links: a Markdown link keeps its words, a bare address becomes [link]."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"(?i)\b(?:https?://|www\.)\S+", "[link]", text)
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "\u2026"


# --- the deliveries' record -------------------------------------------------------------------------------------


class DeliveryLog:
    """One row per delivery (one event to one receiver) in the shared database, marked with the replica that sends
    it (`owner`: its host and home), so that after a restart each replica resumes its own pending deliveries."""

    def __init__(self, db: Database, owner: str):
        self.db, self.owner = db, owner
        cutoff = (datetime.now(timezone.utc) - timedelta(days=KEEP_DAYS)).isoformat(timespec="milliseconds")
        self.db.execute("DELETE FROM webhook_deliveries WHERE status != 'pending' AND created < :cutoff", cutoff=cutoff)

    def add(self, delivery_id: str, event: str, url: str, body: str, created: str) -> None:
        self.db.execute("INSERT INTO webhook_deliveries(id, event, url, body, created, owner) VALUES (:id, :event, :url, :body, :created, :owner)",
                        id=delivery_id, event=event, url=url, body=body, created=created, owner=self.owner)

    def attempted(self, delivery_id: str, status: str, attempts: int, error: str = "") -> None:
        self.db.execute("UPDATE webhook_deliveries SET status = :status, attempts = :attempts, last_error = :error, delivered = :at WHERE id = :id",
                        status=status, attempts=attempts, error=error, at=now() if status == "delivered" else "", id=delivery_id)

    def pending(self) -> list[dict]:
        """This replica's deliveries not yet sent or given up on."""
        return self.db.rows("SELECT * FROM webhook_deliveries WHERE status = 'pending' AND owner = :owner ORDER BY created", owner=self.owner)

    def recent(self, limit: int = 200) -> list[dict]:
        """The latest deliveries of every replica, newest first, without their bodies."""
        return self.db.rows("SELECT id, event, url, status, attempts, last_error, created, delivered FROM webhook_deliveries"
                            " ORDER BY created DESC, id LIMIT :limit", limit=limit)


# --- sending ----------------------------------------------------------------------------------------------------


@dataclass(order=True)
class _Due:
    at: float  # time.monotonic() at which to try
    seq: int
    delivery_id: str = field(compare=False)
    event: str = field(compare=False)
    body: bytes = field(compare=False)
    attempts: int = field(compare=False, default=0)  # made so far


class _Worker(threading.Thread):
    """Sends one receiver's deliveries, each as soon as it is due; a retry waits its backoff without holding up
    the deliveries behind it (so their order is not guaranteed: receivers order by `created`)."""

    def __init__(self, receiver: Receiver, deliveries: DeliveryLog, timeout: float, backoff: list[float]):
        super().__init__(name=f"webhook {urlsplit(receiver.url).hostname}", daemon=True)
        self.receiver, self.deliveries, self.timeout, self.backoff = receiver, deliveries, timeout, backoff
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._closed = False

    def put(self, delivery_id: str, event: str, body: bytes, attempts: int = 0, delay: float = 0.0) -> None:
        with self._wake:
            heapq.heappush(self._due, _Due(time.monotonic() + delay, next(self._seq), delivery_id, event, body, attempts))
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def run(self) -> None:
        with httpx.Client(timeout=self.timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}) as client:
            while True:
                with self._wake:
                    while not self._closed and (not self._due or self._due[0].at > time.monotonic()):
                        self._wake.wait(self._due[0].at - time.monotonic() if self._due else None)
                    if self._closed:
                        return
                    due = heapq.heappop(self._due)
                try:
                    self._attempt(client, due)
                except Exception:  # the worker outlives a bad row or a full disk: the next delivery is tried
                    log.exception("webhook delivery %s to %s", due.delivery_id, self.receiver.url)

    def _attempt(self, client: httpx.Client, due: _Due) -> None:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Supportbot-Event": due.event, "X-Supportbot-Delivery": due.delivery_id,
                   "X-Supportbot-Timestamp": timestamp, "X-Supportbot-Signature": sign(self.receiver.secret, timestamp, due.body)}
        try:
            with client.stream("POST", self.receiver.url, content=due.body, headers=headers) as response:
                status = response.status_code  # the body is never read: a receiver's answer is its status
            error = "" if 200 <= status < 300 else f"HTTP {status}"
            retry = status >= 500 or status == 429
        except httpx.TimeoutException:
            error, retry = f"no answer within {self.timeout:g} s", True
        except httpx.HTTPError as err:
            error, retry = f"{type(err).__name__}: {err}"[:300], True
        attempts = due.attempts + 1
        if not error:
            self.deliveries.attempted(due.delivery_id, "delivered", attempts)
        elif retry and attempts <= len(self.backoff):
            self.deliveries.attempted(due.delivery_id, "pending", attempts, error)
            self.put(due.delivery_id, due.event, due.body, attempts, self.backoff[attempts - 1])
        else:
            self.deliveries.attempted(due.delivery_id, "failed", attempts, error)
            log.warning("webhook delivery %s (%s) to %s failed after %d attempts: %s", due.delivery_id, due.event,
                        self.receiver.url, attempts, error)


class Webhooks:
    """The configured receivers and their workers (none without receivers: no thread)."""

    def __init__(self, config: Config, db: Database, env: Mapping[str, str] | None = None):
        serve = config.serve
        self.receivers = parse_webhooks(serve.webhooks, env)
        if not (serve.webhook_timeout > 0):
            raise ConfigError(f"serve.webhook_timeout {serve.webhook_timeout!r}: expected seconds above 0")
        if any(not (0 <= s < 86_400) for s in serve.webhook_backoff):
            raise ConfigError(f"serve.webhook_backoff {serve.webhook_backoff!r}: expected seconds from 0 to below a day, one per retry")
        self.deliveries = DeliveryLog(db, f"{socket.gethostname()}:{config.home.resolve()}")
        self._workers = {r.url: _Worker(r, self.deliveries, serve.webhook_timeout, list(serve.webhook_backoff)) for r in self.receivers}
        for row in self.deliveries.pending():  # left pending when the server last stopped
            worker = self._workers.get(row["url"])
            if worker is None:
                self.deliveries.attempted(row["id"], "failed", row["attempts"], "its receiver is no longer configured")
            else:
                worker.put(row["id"], row["event"], row["body"].encode("utf-8"), min(row["attempts"], len(worker.backoff)))
        for worker in self._workers.values():
            worker.start()

    def emit(self, event: str, payload: dict) -> list[str]:
        """Queue `event` for every receiver that takes it and return at once with the delivery ids; a failure to
        record a delivery is logged, never raised to the customer or agent whose action caused it."""
        if event not in EVENTS:
            raise ValueError(f"webhook event {event!r}: expected one of {', '.join(EVENTS)}")
        ids = []
        for receiver in self.receivers:
            if event not in receiver.events:
                continue
            delivery_id, created = uuid.uuid4().hex, now()
            body = json.dumps({"event": event, "id": delivery_id, "created": created, "data": payload},
                              ensure_ascii=False, separators=(",", ":"))
            try:
                self.deliveries.add(delivery_id, event, receiver.url, body, created)
            except sa.exc.SQLAlchemyError as err:
                log.error("webhook %s to %s not recorded, not sent: %s", event, receiver.url, err)
                continue
            self._workers[receiver.url].put(delivery_id, event, body.encode("utf-8"))
            ids.append(delivery_id)
        return ids

    def recent(self, limit: int = 200) -> list[dict]:
        """The latest deliveries, newest first: id, event, url, status, attempts, last_error, created, delivered."""
        return self.deliveries.recent(limit)

    def close(self, wait: float = 1.0) -> None:
        """Stop the workers (a delivery in flight may finish within `wait`); what is pending is sent at the next start."""
        for worker in self._workers.values():
            worker.close()
        for worker in self._workers.values():
            worker.join(wait)
