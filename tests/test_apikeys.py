"""API keys for server-to-server callers of the OpenAI-compatible route: made, listed and revoked with
`supportbot apikey`, stored hashed, and counted by their own rate limit instead of the caller's address.
The real app runs in process (Starlette's TestClient, one client address for every call) on the tiny models."""

from __future__ import annotations

import json

import pytest
from helpers import write

from ui.apikeys import hash_key
from ui.cli import main
from ui.ratelimit import Caller, RateLimited, RateLimiter, RateLimits

FAQ = "id,question,answer\ngift-exp,Do gift cards expire?,Gift cards never expire and have no fees.\n"


def cli(capsys, home, *args) -> tuple[int, dict | str]:
    capsys.readouterr()
    status = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if "--json" in args and status == 0 else err)


def add_key(capsys, home, name: str, *flags) -> str:
    status, made = cli(capsys, home, "apikey", "add", name, *flags, "--json")
    assert status == 0
    return made["key"]


@pytest.fixture
def app(home_config):
    """The app with small limits: 2 messages a minute per address, 3 per API key by default (template answers:
    the tiny LM is not loaded)."""
    from fastapi.testclient import TestClient

    from retrieval import KnowledgeBase
    from ui.app import build_app

    config = home_config
    config.answer.mode, config.answer.handoff_confidence = "template", 0.0
    config.limits.chat_per_address, config.limits.api_key_per_minute = 2, 3
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(config.home / "faq.csv", FAQ)])
    kb.close()
    with TestClient(build_app(config)) as client:
        def post(key: str | None = None, user: str = ""):
            headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
            body = {"messages": [{"role": "user", "content": "Do gift cards expire?"}], "user": user}
            return client.post("/v1/chat/completions", json=body, headers=headers)

        yield post, config


def test_keys_are_made_listed_and_revoked_and_never_stored_in_clear(capsys, tmp_path):
    home = tmp_path / "home"
    key = add_key(capsys, home, "helpdesk", "--limit", "50")
    assert key.startswith("sb_") and len(key) == 35
    assert add_key(capsys, home, "crm") != key
    status, err = cli(capsys, home, "apikey", "add", "helpdesk")
    assert status == 1 and "API key 'helpdesk' exists; revoke it first" in err
    status, listing = cli(capsys, home, "apikey", "list", "--json")
    assert [(k["name"], k["limit"], k["last_used"], k["revoked"]) for k in listing["keys"]] == [
        ("crm", None, None, None), ("helpdesk", 50, None, None)]
    assert listing["default_limit"] == 300 and key not in json.dumps(listing)
    stored = b"".join(p.read_bytes() for p in home.glob("conversations.sqlite*"))  # the home's database
    assert b"helpdesk" in stored and key.encode() not in stored and key[3:].encode() not in stored
    status, revoked = cli(capsys, home, "apikey", "revoke", "helpdesk", "--json")
    assert status == 0 and revoked["name"] == "helpdesk" and revoked["revoked"]
    assert cli(capsys, home, "apikey", "revoke", "helpdesk")[1].strip().endswith("API key 'helpdesk' was already revoked")
    assert "no API key named 'nope'" in cli(capsys, home, "apikey", "revoke", "nope")[1]
    assert "--limit 0" in cli(capsys, home, "apikey", "add", "x", "--limit", "0")[1]
    assert add_key(capsys, home, "helpdesk") != key  # a revoked key's name may be used again, with a new key


def test_a_valid_key_is_served_an_unknown_or_revoked_one_gets_401(app, capsys):
    post, config = app
    key = add_key(capsys, config.home, "helpdesk")
    served = post(key)
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"].startswith("Gift cards never expire")
    assert cli(capsys, config.home, "apikey", "list", "--json")[1]["keys"][0]["last_used"]
    unknown = post("sb_" + "x" * 32)
    assert unknown.status_code == 401 and unknown.headers["WWW-Authenticate"] == "Bearer"
    assert unknown.json() == {"error": {"message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}}
    cli(capsys, config.home, "apikey", "revoke", "helpdesk")
    revoked = post(key)  # at once: the server reads the store on every call
    assert revoked.status_code == 401 and revoked.json()["error"]["message"] == "API key 'helpdesk' was revoked"
    assert post("sk-no-key-needed").status_code == 200  # an OpenAI library's placeholder: a keyless call, as before


def test_each_key_has_its_own_limit_and_the_address_limit_does_not_count_it(app, capsys):
    post, config = app
    small, default = add_key(capsys, config.home, "small", "--limit", "1"), add_key(capsys, config.home, "default")
    assert [post(small).status_code for _ in range(2)] == [200, 429]
    assert post(small).json()["error"]["message"] == "too many messages from this API key; try again in 60 s"
    assert [post(default, f"customer-{i}").status_code for i in range(4)] == [200, 200, 200, 429]  # 3: the default
    assert [post().status_code for _ in range(3)] == [200, 200, 429]  # keyless calls from the same address: its own 2
    assert post().json()["error"]["message"].startswith("too many messages from this address")


def test_require_api_key_refuses_keyless_calls(app, capsys):
    post, config = app
    config.serve.require_api_key = True
    key = add_key(capsys, config.home, "helpdesk")
    for refused in (post(), post("sk-no-key-needed")):
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "invalid_request_error"
    assert "needs an API key" in post().json()["error"]["message"]
    assert post(key).status_code == 200


def test_a_key_replaces_the_address_in_the_limiter_and_its_users_are_sessions_within_it(tmp_path):
    from chatbot import ConversationLog

    now = [0.0]
    db = ConversationLog(tmp_path / "log.sqlite").db
    limiter = RateLimiter(RateLimits(chat_per_session=1, chat_per_address=1, api_key_per_minute=2), db, lambda: now[0])
    limiter.take("chat", Caller("10.0.0.1"))
    for user in ("a", "b"):
        limiter.take("chat", Caller("10.0.0.1", f"k1/{user}", api_key="k1"))  # the address's window is full
    with pytest.raises(RateLimited, match="from this API key"):
        limiter.take("chat", Caller("10.0.0.1", "k1/c", api_key="k1"))
    limiter.take("chat", Caller("10.0.0.1", "k2/a", api_key="k2", api_key_limit=5))
    with pytest.raises(RateLimited, match="from this session"):
        limiter.take("chat", Caller("10.0.0.1", "k2/a", api_key="k2", api_key_limit=5))
    now[0] += 60
    limiter.take("chat", Caller("10.0.0.1", "k1/c", api_key="k1"))


def test_keys_kept_by_an_older_version_are_moved_into_the_database_once(capsys, tmp_path):
    import sqlite3

    home = tmp_path / "home"
    home.mkdir()
    old = sqlite3.connect(home / "apikeys.sqlite")  # as versions before the shared database kept them
    old.execute("CREATE TABLE api_keys(name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, per_minute INTEGER,"
                " created_at TEXT NOT NULL, last_used TEXT, revoked_at TEXT)")
    old.execute("INSERT INTO api_keys VALUES ('legacy', ?, 7, '2026-11-01T09:00:00+00:00', NULL, NULL)", (hash_key("sb_legacy"),))
    old.commit()
    old.close()
    listing = cli(capsys, home, "apikey", "list", "--json")[1]
    assert [(k["name"], k["limit"]) for k in listing["keys"]] == [("legacy", 7)]
    assert not (home / "apikeys.sqlite").exists() and (home / "apikeys.sqlite.imported").exists()
    assert [k["name"] for k in cli(capsys, home, "apikey", "list", "--json")[1]["keys"]] == ["legacy"]  # once, not twice
