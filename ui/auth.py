"""Agent and ops accounts and expiring sessions (both in the shared database), password hashing (scrypt:
memory-hard).

Roles are checked on the server by every handler that needs one (`Sessions.require`), not by hiding tabs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from retrieval.database import Database

ROLES = ("agent", "ops")
DEMO_USERS = ("agent", "ops")  # name = password = role: for trying the app, refused in production
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(PermissionError):
    """Not logged in, wrong role, or session expired: one line the UI shows."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


@functools.cache
def _stand_in_hash() -> str:
    """What an unknown user name is checked against, so that it takes as long as a wrong password and
    the time of a refusal does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


@dataclass
class Account:
    name: str
    role: str
    password_hash: str


def parse_accounts(entries: list[str]) -> dict[str, Account]:
    """ "name:role:hash" entries (`serve.users`)."""
    accounts = {}
    for entry in entries:
        name, role, password_hash = (entry.split(":", 2) + ["", ""])[:3]
        if not name or role not in ROLES or not password_hash.startswith("scrypt$"):
            raise ValueError(f"serve.users entry {entry.split(':')[0]!r}: expected name:role:scrypt-hash with role agent or ops")
        accounts[name] = Account(name, role, password_hash)
    return accounts


def uses_demo_password(accounts: dict[str, Account]) -> bool:
    return any(verify_password(a.name, a.password_hash) for a in accounts.values())


class Accounts:
    """Staff accounts: those `supportbot user add` keeps in the shared database (every replica signs them in), and
    any `serve.users` entries of the config (a home from before, or accounts provisioned through the
    environment); for a name in both, the database's. With none at all, the demo accounts (name = password)."""

    def __init__(self, configured: list[str], db: Database):
        self.configured = parse_accounts(configured)
        self.db = db

    def get(self, name: str) -> Account | None:
        rows = self.db.rows("SELECT name, role, password_hash FROM staff_accounts WHERE name = :name", name=name)
        return Account(**rows[0]) if rows else self.all().get(name)

    def all(self) -> dict[str, Account]:
        stored = {r["name"]: Account(**r) for r in self.db.rows("SELECT name, role, password_hash FROM staff_accounts")}
        accounts = {**self.configured, **stored}
        return accounts or _demo_accounts()

    def add(self, name: str, role: str, password: str) -> None:
        """Add the account, or give an existing one this role and password."""
        if ":" in name or not name.strip():
            raise ValueError(f"user name {name!r}: must be non-empty without ':'")
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected agent or ops")
        self.db.upsert("staff_accounts", "name", name=name, role=role, password_hash=hash_password(password),
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


@functools.cache
def _demo_accounts() -> dict[str, Account]:
    return {name: Account(name, name, hash_password(name)) for name in DEMO_USERS}


@dataclass
class Session:
    user: str
    role: str
    expires: float


class Sessions:
    """Staff sessions, kept in the shared database (a SHA-256 of each token, never the token), so that a sign-in
    holds on every app replica and across restarts until it expires."""

    def __init__(self, accounts: Accounts, minutes: int, db: Database, clock: Callable[[], float] = time.time):
        self.accounts = accounts
        self.lifetime = minutes * 60
        self.db = db
        self._clock = clock

    def login(self, name: str, password: str) -> tuple[str, Session]:
        account = self.accounts.get(name.strip())  # read at each sign-in: an account added on any replica counts
        matched = verify_password(password, account.password_hash if account else _stand_in_hash())
        if account is None or not matched:
            raise AuthError("wrong user name or password")
        token = secrets.token_urlsafe(32)
        session = Session(account.name, account.role, self._clock() + self.lifetime)
        with self.db.transaction():
            self.db.execute("DELETE FROM staff_sessions WHERE expires < :now", now=self._clock())
            self.db.execute("INSERT INTO staff_sessions(token_hash, user_name, role, expires) VALUES (:token, :user, :role, :expires)",
                            token=_digest(token), user=session.user, role=session.role, expires=session.expires)
        return token, session

    def logout(self, token: str) -> None:
        self.db.execute("DELETE FROM staff_sessions WHERE token_hash = :token", token=_digest(token or ""))

    def require(self, token: str | None, role: str) -> Session:
        """The session behind `token` if it is live and has `role` (ops may do what agents do)."""
        rows = self.db.rows("SELECT user_name, role, expires FROM staff_sessions WHERE token_hash = :token AND expires >= :now",
                            token=_digest(token or ""), now=self._clock()) if token else []
        if not rows:
            raise AuthError("please log in (your session is missing or has expired)")
        session = Session(rows[0]["user_name"], rows[0]["role"], rows[0]["expires"])
        if session.role != role and not (session.role == "ops" and role == "agent"):
            raise AuthError(f"this needs the {role} role; you are logged in as {session.role}")
        return session


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
