"""Rate limits for the doors that take sign-ins and chat messages (the Gradio handlers and API, the
OpenAI-compatible route): a sliding window per session and one per client address, so that neither one
browser nor many sessions from one address can flood the app or guess passwords quickly. The windows live in
the shared database, so they hold across app replicas. A caller with an
API key (ui/apikeys.py) is counted by its key, each key with its own limit per minute, instead of by its
address: a helpdesk sends all its customers' messages from one.

Failed sign-ins count, successful ones do not (a colleague signing in twice is not an attack); every chat
message counts. A caller of None is in-process (tests, scripts) and is not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chatbot.config import RateLimits
from retrieval.database import Database

Clock = Callable[[], float]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the client's address and, where the door has one, its session; for a caller with an
    API key, the key's name and its messages per minute (0: limits.api_key_per_minute)."""

    address: str
    session: str = ""
    api_key: str = ""
    api_key_limit: int = 0


class RateLimited(PermissionError):
    """Too many requests: one line for the person, and when to try again (HTTP's Retry-After)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class SlidingWindow:
    """At most `limit` events per `window` seconds for each key. The events are rows of the shared database
    (`rate_events`), so that every app replica counts the same window; `RateLimiter` calls these inside one
    transaction."""

    def __init__(self, db: Database, bucket: str, limit: int, window: float, clock: Clock):
        self.db = db
        self.bucket = bucket
        self.limit = limit
        self.window = window
        self._clock = clock
        self._swept = clock()

    def wait(self, key: str, limit: int = 0) -> float:
        """Seconds until `key` may cause one more event (0: now), at most `limit` per window (0: self.limit)."""
        now = self._clock()
        (row,) = self.db.rows("SELECT COUNT(*) AS n, MIN(at) AS first FROM rate_events WHERE bucket = :bucket AND key = :key AND at > :since",
                              bucket=self.bucket, key=key, since=now - self.window)
        if row["n"] < (limit or self.limit):
            return 0.0
        return row["first"] + self.window - now

    def record(self, key: str) -> None:
        now = self._clock()
        self._sweep(now)
        self.db.execute("INSERT INTO rate_events(bucket, key, at) VALUES (:bucket, :key, :at)", bucket=self.bucket, key=key, at=now)

    def forget(self, key: str) -> None:
        """Take back the newest event of `key`."""
        self.db.execute("DELETE FROM rate_events WHERE id = (SELECT MAX(id) FROM rate_events WHERE bucket = :bucket AND key = :key)",
                        bucket=self.bucket, key=key)

    def _sweep(self, now: float) -> None:
        """Drop the events that left the window (at most once a window), so the table stays bounded by the
        traffic of one window however many sessions come and go."""
        if now - self._swept < self.window:
            return
        self._swept = now
        self.db.execute("DELETE FROM rate_events WHERE bucket = :bucket AND at <= :before", bucket=self.bucket, before=now - self.window)


_WHAT = {"login": "failed sign-ins", "chat": "messages"}
API_KEY_WINDOW_S = 60.0  # an API key's limit is per minute


class RateLimiter:
    """The login and chat windows of the app (all its replicas), per session and per address (or API key)."""

    def __init__(self, limits: RateLimits, db: Database, clock: Clock = time.time):
        self.db = db
        self._windows = {
            "login": (SlidingWindow(db, "login/session", limits.login_failures_per_session, limits.login_window_s, clock),
                      SlidingWindow(db, "login/address", limits.login_failures_per_address, limits.login_window_s, clock)),
            "chat": (SlidingWindow(db, "chat/session", limits.chat_per_session, limits.chat_window_s, clock),
                     SlidingWindow(db, "chat/address", limits.chat_per_address, limits.chat_window_s, clock)),
        }
        self._per_key = SlidingWindow(db, "chat/api_key", limits.api_key_per_minute, API_KEY_WINDOW_S, clock)

    def _counters(self, kind: str, caller: Caller) -> list[tuple[SlidingWindow, str, int, str]]:
        """Where the caller's `kind` events count: (window, key in it, limit (0: the window's), in words)."""
        per_session, per_address = self._windows[kind]
        counters = [(self._per_key, caller.api_key, caller.api_key_limit, "this API key") if caller.api_key and kind == "chat"
                    else (per_address, caller.address, 0, "this address")]
        if caller.session:
            counters.append((per_session, caller.session, 0, "this session"))
        return counters

    def take(self, kind: str, caller: Caller | None) -> None:
        """Count one `kind` event ("login" or "chat") for the caller, or raise RateLimited (counting nothing)
        when its session or its address has used up its window."""
        if caller is None:
            return
        counters = self._counters(kind, caller)
        with self._counting(counters):
            wait, source = max((window.wait(key, limit), source) for window, key, limit, source in counters)
            if wait > 0:
                raise RateLimited(f"too many {_WHAT[kind]} from {source}; try again in {math.ceil(wait)} s", wait)
            for window, key, _, _ in counters:
                window.record(key)

    def give_back(self, kind: str, caller: Caller | None) -> None:
        """Undo the last `take` of the caller (a sign-in that succeeded)."""
        if caller is None:
            return
        counters = self._counters(kind, caller)
        with self._counting(counters):
            for window, key, _, _ in counters:
                window.forget(key)

    @contextmanager
    def _counting(self, counters: list) -> Iterator[None]:
        """One transaction for reading and counting; on PostgreSQL each key's lock is taken first (in one order),
        so that two replicas counting the same caller at once take turns instead of both getting the last slot."""
        with self.db.transaction(*(f"{window.bucket}:{key}" for window, key, _, _ in counters)):
            yield
