"""API keys for server-to-server callers of the OpenAI-compatible route (`supportbot apikey add|list|revoke`).

A helpdesk integration sends every customer's message from one address; with a key it is counted by the
key's name, each key with its own per-minute limit, instead of by that address. A key is shown once, when
it is made; the shared database (`api_keys`, on every replica) keeps only its SHA-256. A revoked key stays
listed, refused; the server reads the table on every call, so `apikey revoke` takes effect at the next request
without a restart.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from retrieval.database import Database

from .ratelimit import Caller

PREFIX = "sb_"  # what marks a bearer token as one of ours (see `caller`)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
TOUCH_EVERY = timedelta(minutes=1)  # `last_used` is written at most this often per key, not on every call

class ApiKeyError(ValueError):
    """A key refused (unknown, revoked, missing) or a bad `apikey` command: one line."""


@dataclass
class ApiKey:
    name: str
    created: str
    last_used: str | None
    limit: int | None  # per minute; None: the `limits.api_key_per_minute` setting
    revoked: str | None  # when, or None while it is valid

    def to_json(self) -> dict:
        return asdict(self)


def hash_key(key: str) -> str:
    # A plain SHA-256, not scrypt as for passwords (ui/auth.py): a key is 32 random url-safe characters (192
    # bits), so no guess can be checked against a leaked hash however fast the hash is; slowing the hash would
    # only slow every API call, which checks its key.
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ApiKeys:
    def __init__(self, db: Database):
        self.db = db

    def add(self, name: str, limit: int | None = None) -> str:
        """Make a key called `name` and return it (the only time it is seen). A revoked key's name may be
        used again; a valid one's may not (revoke it first)."""
        if not NAME.fullmatch(name):
            raise ApiKeyError(f"API key name {name[:80]!r}: use up to 64 letters, digits, '_', '.', '@' or '-'")
        if limit is not None and limit < 1:
            raise ApiKeyError(f"--limit {limit}: expected at least 1 message per minute")
        key = PREFIX + secrets.token_urlsafe(24)  # 32 characters
        added = self.db.execute(
            "INSERT INTO api_keys(name, key_hash, per_minute, created_at) VALUES (:name, :hash, :limit, :at) ON CONFLICT(name) DO UPDATE"
            " SET key_hash = excluded.key_hash, per_minute = excluded.per_minute, created_at = excluded.created_at,"
            " last_used = NULL, revoked_at = NULL WHERE api_keys.revoked_at IS NOT NULL",
            name=name, hash=hash_key(key), limit=limit, at=_now().isoformat(timespec="seconds"))
        if not added:
            raise ApiKeyError(f"API key {name!r} exists; revoke it first or choose another name")
        return key

    def list(self) -> list[ApiKey]:
        return [_key(row) for row in self.db.rows("SELECT * FROM api_keys ORDER BY name")]

    def revoke(self, name: str) -> ApiKey:
        with self.db.transaction():
            changed = self.db.execute("UPDATE api_keys SET revoked_at = :at WHERE name = :name AND revoked_at IS NULL",
                                      at=_now().isoformat(timespec="seconds"), name=name)
            rows = self.db.rows("SELECT * FROM api_keys WHERE name = :name", name=name)
        if not rows:
            raise ApiKeyError(f"no API key named {name[:80]!r}")
        if not changed:
            raise ApiKeyError(f"API key {name!r} was already revoked")
        return _key(rows[0])

    def check(self, key: str) -> ApiKey:
        """The valid key behind `key`, its use recorded; else ApiKeyError. (Looking the hash up is not a
        timing leak: the time tells at most something about a hash, from which no key follows.)"""
        if not key:
            raise ApiKeyError("this route needs an API key: send 'Authorization: Bearer <key>' (`supportbot apikey add NAME`)")
        rows = self.db.rows("SELECT * FROM api_keys WHERE key_hash = :hash", hash=hash_key(key))
        if not rows:
            raise ApiKeyError("invalid API key")
        row = rows[0]
        if row["revoked_at"] is not None:
            raise ApiKeyError(f"API key {row['name']!r} was revoked")
        now = _now()
        self.db.execute("UPDATE api_keys SET last_used = :now WHERE name = :name AND (last_used IS NULL OR last_used < :stale)",
                        now=now.isoformat(timespec="seconds"), name=row["name"], stale=(now - TOUCH_EVERY).isoformat(timespec="seconds"))
        return _key(row)

    def caller(self, authorization: str, address: str, user: str, required: bool) -> Caller:
        """Who a call with this `Authorization` header is, for the rate limiter: with a valid key, the key (its
        own limit) and the caller's `user` within it; without one, the address and `user` as for any client.
        A bearer token that is not one of ours (no `sb_`: the placeholder an OpenAI client library insists on)
        counts as no key; a key of ours that is unknown or revoked is refused, as is a call without a key when
        `required` (serve.require_api_key)."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if token.startswith(PREFIX) or required:
            found = self.check(token)
            return Caller(address, f"{found.name}/{user}" if user else "", api_key=found.name, api_key_limit=found.limit or 0)
        return Caller(address, user)


def _key(row: dict) -> ApiKey:
    return ApiKey(row["name"], row["created_at"], row["last_used"], row["per_minute"], row["revoked_at"])
