"""Sign-ins and chat messages are rate-limited per session and per client address, at every door that takes
them: the Gradio API and the page's own handlers (sign-in, chat) and the OpenAI-compatible route. The
limiter runs on an injected clock: waiting is a step of the clock, not a sleep."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from gradio_door import GradioError, Page

from ui.ratelimit import Caller, RateLimited, RateLimiter, RateLimits

LIMITS = RateLimits(login_failures_per_session=2, login_failures_per_address=3, login_window_s=300,
                    chat_per_session=2, chat_per_address=3, chat_window_s=60)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the limiter ------------------------------------------------------------------------------------


@pytest.fixture
def db(database):
    """The shared database the windows live in, on each engine."""
    from chatbot import ConversationLog

    log = ConversationLog(database)
    yield log.db
    log.close()


def test_past_the_limit_calls_are_refused_until_the_window_moves_on(db):
    clock = Clock()
    limiter = RateLimiter(LIMITS, db, clock)
    caller = Caller("10.0.0.1", "s1")
    limiter.take("chat", caller)
    clock.now += 20
    limiter.take("chat", caller)
    with pytest.raises(RateLimited, match="too many messages from this session; try again in 40 s") as refused:
        limiter.take("chat", caller)
    assert refused.value.retry_after == 40
    clock.now += 40
    limiter.take("chat", caller)  # the first message left the window
    with pytest.raises(RateLimited):
        limiter.take("chat", caller)


def test_sessions_and_addresses_are_limited_independently(db):
    clock = Clock()
    limiter = RateLimiter(LIMITS, db, clock)
    limiter.take("chat", Caller("10.0.0.1", "s1"))
    limiter.take("chat", Caller("10.0.0.1", "s1"))
    with pytest.raises(RateLimited, match="from this session"):
        limiter.take("chat", Caller("10.0.0.1", "s1"))
    limiter.take("chat", Caller("10.0.0.1", "s2"))  # another session at the same address: its own window...
    with pytest.raises(RateLimited, match="from this address"):
        limiter.take("chat", Caller("10.0.0.1", "s3"))  # ...until the address has used up its own
    limiter.take("chat", Caller("10.0.0.2", "s4"))  # another address: its own window
    with pytest.raises(RateLimited, match="from this session"):
        limiter.take("chat", Caller("10.0.0.2", "s1"))  # a session stays limited when its address changes
    limiter.take("login", Caller("10.0.0.1", "s1"))  # sign-ins and messages are counted apart


def test_refused_calls_do_not_count_and_successful_sign_ins_are_given_back(db):
    clock = Clock()
    limiter = RateLimiter(LIMITS, db, clock)
    caller = Caller("10.0.0.1", "s1")
    for _ in range(2):
        limiter.take("login", caller)
    for _ in range(5):
        with pytest.raises(RateLimited, match="too many failed sign-ins from this session; try again in 300 s"):
            limiter.take("login", caller)
    clock.now += 300
    for _ in range(5):  # succeeded sign-ins: taken, then given back
        limiter.take("login", caller)
        limiter.give_back("login", caller)
    limiter.take("login", caller)


def test_in_process_callers_are_not_limited(db):
    limiter = RateLimiter(LIMITS, db, Clock())
    for _ in range(10):
        limiter.take("chat", None)


# --- the doors ----------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path, tiny_embedder_path):
    """The app on a service with small limits and a clock the test moves (an empty knowledge base: every
    question is handed off, no model is loaded)."""
    from fastapi.testclient import TestClient

    from chatbot import load_config
    from ui.app import build_app
    from ui.service import SupportService

    config = load_config(tmp_path / "home", [f"retrieval.embedder={tiny_embedder_path}"], env={})
    config.limits = LIMITS
    clock = Clock()
    service = SupportService(config, clock=clock)
    with TestClient(build_app(config, service)) as client:
        yield client, service, clock


# The API function (on the customer page, with the rest of the named API) and the staff page's sign-in button.
@pytest.mark.parametrize("door, path", [("login", ""), ("sign_in", "/staff")])
def test_failed_sign_ins_are_limited_per_session_and_per_address(app, door, path):
    client, _, clock = app
    first, second = Page(client, path), Page(client, path)
    for _ in range(2):
        with pytest.raises(GradioError, match="wrong user name or password"):
            first.call(door, "ops", "guess")
    with pytest.raises(GradioError, match="too many failed sign-ins from this session; try again in 300 s"):
        first.call(door, "ops", "ops")  # refused before the password is checked
    second.call(door, "ops", "ops")  # another session may sign in; a success does not count
    with pytest.raises(GradioError, match="wrong user name or password"):
        second.call(door, "ops", "guess")
    with pytest.raises(GradioError, match="too many failed sign-ins from this address"):
        Page(client, path).call(door, "ops", "ops")
    clock.now += 300
    first.call(door, "ops", "ops")


@pytest.mark.parametrize("door", ["chat", "ask"])  # the API function and the page's chat box
def test_chat_messages_are_limited_per_session_and_per_address(app, door):
    client, service, clock = app
    first, second = Page(client), Page(client)
    for _ in range(2):
        first.call(door, "Do gift cards expire?", "")
    conversations = len(service.bot.log.conversations())
    with pytest.raises(GradioError, match="too many messages from this session; try again in 60 s"):
        first.call(door, "Do gift cards expire?", "")
    second.call(door, "Do gift cards expire?", "")
    with pytest.raises(GradioError, match="too many messages from this address"):
        Page(client).call(door, "Do gift cards expire?", "")
    assert len(service.bot.log.conversations()) == conversations + 1  # refused messages are not logged
    clock.now += 60
    first.call(door, "Do gift cards expire?", "")


def test_the_openai_route_answers_429_with_retry_after(app):
    client, service, clock = app

    def post(user: str):
        body = {"messages": [{"role": "user", "content": "Do gift cards expire?"}], "user": user}
        return client.post("/v1/chat/completions", json=body)

    assert [post("customer-1").status_code for _ in range(2)] == [200, 200]
    refused = post("customer-1")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert refused.json()["error"] == {"message": "too many messages from this session; try again in 60 s", "type": "rate_limit_error"}
    assert post("customer-2").status_code == 200  # the `user` field is the session
    assert post("customer-3").json()["error"]["message"].startswith("too many messages from this address")
    conversations = len(service.bot.log.conversations())
    clock.now += 60
    assert post("customer-1").status_code == 200
    assert len(service.bot.log.conversations()) == conversations + 1
