"""Webhooks against a real receiver: an HTTP server on 127.0.0.1 in a thread that checks each delivery's signature
with `verify`, as a company's receiver would. Each path of the receiver answers as a script says (a status, or a
hang past the sender's timeout), so retries, backoff, timeouts and refusals are the real ones."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import REPO
from helpers import write

SECRET = "whsec-test-0123456789"
FAST = ["serve.webhook_backoff=0.05,0.05", "serve.webhook_timeout=0.3"]  # retries and timeouts in tenths of a second
HANG_SECONDS = 2.0  # a hanging receiver answers after this (far past the 0.3 s timeout)


class Receiver:
    """Records every request; `script[path]` lists the answers to give in turn (the last one repeats): an HTTP
    status, or "hang" (answer 200 only after HANG_SECONDS)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: dict[str, list] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    seen = sum(r["path"] == self.path for r in receiver.requests)
                    answers = receiver.script.get(self.path, [200])
                    answer = answers[min(seen, len(answers) - 1)]
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic(),
                                              "verified": _verify(self.headers, body)})
                if answer == "hang":
                    time.sleep(HANG_SECONDS)
                    answer = 200
                try:
                    self.send_response(answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


def _verify(headers, body: bytes) -> bool:
    from ui.webhooks import verify

    return verify(SECRET, headers["X-Supportbot-Timestamp"], body, headers["X-Supportbot-Signature"])


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def hooks(tmp_path, receiver, *paths: str, settings=FAST):
    """Webhooks on a fresh home, one receiver per path (all events), configured as `--set` flags would be."""
    from chatbot import load_config
    from chatbot.log import open_database
    from ui.webhooks import Webhooks

    items = json.dumps([f"{receiver.base}{p} secret={SECRET}" for p in paths])
    config = load_config(tmp_path / "home", [f"serve.webhooks={items}", *settings], env={})
    return Webhooks(config, open_database(config.log_database))


def until(condition, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def delivery(webhooks, delivery_id: str, status: str | None = None) -> dict:
    """The delivery's row, once it has `status` (any status when None)."""
    return until(lambda: next((d for d in webhooks.recent() if d["id"] == delivery_id and status in (None, d["status"])), None))


# --- configuration ---------------------------------------------------------------------------------------------


def test_receivers_are_configured_in_toml_environment_or_flags_and_bad_ones_are_refused(tmp_path):
    from chatbot import ConfigError, load_config
    from ui.webhooks import parse_webhooks

    home = tmp_path / "home"
    write(home / "config.toml", '[serve]\nwebhooks = ["https://hooks.example.com/a events=handoff+closed secret=env:HOOK_A",'
                                ' "https://hooks.example.com/b secret=inline-secret"]\n')
    config = load_config(home, env={})
    a, b = parse_webhooks(config.serve.webhooks, {"HOOK_A": "from-env"})
    assert (a.url, a.events, a.secret) == ("https://hooks.example.com/a", {"handoff", "closed"}, "from-env")
    assert b.events == {"handoff", "agent_reply", "closed", "rated"} and b.secret == "inline-secret"
    from_env = load_config(tmp_path / "other", env={"SUPPORTBOT_SERVE_WEBHOOKS": "http://127.0.0.1:9/h events=rated secret=x"})
    flag = load_config(tmp_path / "other", ["serve.webhooks=http://127.0.0.1:9/h events=rated secret=x"], env={})
    assert from_env.serve.webhooks == flag.serve.webhooks == ["http://127.0.0.1:9/h events=rated secret=x"]

    for item, complaint in [("hooks.example.com/a secret=x", "http"), ("https://h.example.com events=handoff", "give a secret"),
                            ("https://h.example.com events=opened secret=x", "unknown event 'opened'"),
                            ("https://h.example.com secret=env:NOT_SET", "NOT_SET is not set"),
                            ("https://h.example.com secret=hunter2 secret=hunter3", "secret=\\.\\.\\."), ("", "http")]:
        with pytest.raises(ConfigError, match=f"^serve.webhooks item 1 .*{complaint}") as refused:
            parse_webhooks([item], {})
        assert "hunter" not in str(refused.value) and "\n" not in str(refused.value)  # one line, never the secret
    with pytest.raises(ConfigError, match="listed twice"):
        parse_webhooks(["https://h.example.com secret=x", "https://h.example.com events=rated secret=y"], {})


# --- delivery --------------------------------------------------------------------------------------------------


def test_a_delivery_is_signed_json_that_the_receiver_verifies(tmp_path, receiver):
    from ui.webhooks import verify

    webhooks = hooks(tmp_path, receiver, "/ok")
    (delivery_id,) = webhooks.emit("closed", {"conversation_id": "c1", "agent": "kim"})
    (got,) = until(lambda: receiver.at("/ok"))
    body, headers = got["body"], got["headers"]
    assert got["verified"]
    assert json.loads(body) == {"event": "closed", "id": delivery_id, "created": json.loads(body)["created"],
                                "data": {"conversation_id": "c1", "agent": "kim"}}
    assert headers["X-Supportbot-Event"] == "closed" and headers["X-Supportbot-Delivery"] == delivery_id
    assert headers["Content-Type"] == "application/json"
    stamp, signature = headers["X-Supportbot-Timestamp"], headers["X-Supportbot-Signature"]
    assert signature.startswith("sha256=") and abs(int(stamp) - time.time()) < 5
    assert not verify("another secret", stamp, body, signature)  # forged
    assert not verify(SECRET, stamp, body.replace(b"kim", b"bob"), signature)  # tampered
    assert not verify(SECRET, stamp, body, signature, at=int(stamp) + 301)  # replayed later
    documented = {}  # the receiver's check as docs/operations.md shows it, on the real delivery
    exec(re.search(r"```python\n(import hashlib.*?)```", (REPO / "docs" / "operations.md").read_text(), re.DOTALL)[1], documented)
    assert documented["verify"](SECRET, headers, body) and not documented["verify"]("another secret", headers, body)
    row = delivery(webhooks, delivery_id, "delivered")
    assert (row["event"], row["url"], row["attempts"], row["last_error"]) == ("closed", f"{receiver.base}/ok", 1, "")
    assert row["delivered"] >= row["created"]
    webhooks.close()


def test_a_503_is_retried_with_backoff_until_it_is_delivered(tmp_path, receiver):
    receiver.script["/flaky"] = [503, 503, 200]
    webhooks = hooks(tmp_path, receiver, "/flaky")
    (delivery_id,) = webhooks.emit("rated", {"conversation_id": "c1", "message_id": 7, "rating": -1, "comment": ""})
    row = delivery(webhooks, delivery_id, "delivered")
    tries = receiver.at("/flaky")
    assert row["attempts"] == 3 and len(tries) == 3 and all(t["verified"] for t in tries)
    assert len({t["body"] for t in tries}) == 1 and {t["headers"]["X-Supportbot-Delivery"] for t in tries} == {delivery_id}
    assert all(later["at"] - earlier["at"] >= 0.04 for earlier, later in zip(tries, tries[1:]))  # each retry waited its backoff
    webhooks.close()


def test_a_hanging_receiver_delays_neither_emit_nor_the_other_receivers_and_its_delivery_fails(tmp_path, receiver):
    receiver.script["/hang"] = ["hang"]
    webhooks = hooks(tmp_path, receiver, "/hang", "/ok")
    started = time.monotonic()
    first = webhooks.emit("handoff", {"conversation_id": "c1", "reason": "human"})
    second = webhooks.emit("handoff", {"conversation_id": "c2", "reason": "human"})
    emitted = time.monotonic() - started
    assert emitted < HANG_SECONDS / 4  # emit only queues: it returned while the receiver still hung
    assert len(first) == len(second) == 2
    until(lambda: len(receiver.at("/ok")) == 2)  # the other receiver got both while /hang still hung
    assert not receiver.at("/hang") or receiver.at("/hang")[0]["at"] + HANG_SECONDS > time.monotonic()
    hung = delivery(webhooks, first[0], "failed")
    assert hung["url"].endswith("/hang") and hung["attempts"] == 3 and hung["last_error"] == "no answer within 0.3 s"
    assert delivery(webhooks, first[1])["status"] == "delivered"
    webhooks.close()


def test_a_400_is_not_retried(tmp_path, receiver):
    receiver.script["/bad"] = [400]
    webhooks = hooks(tmp_path, receiver, "/bad")
    (delivery_id,) = webhooks.emit("agent_reply", {"conversation_id": "c1", "agent": "kim", "text": "Hi"})
    row = delivery(webhooks, delivery_id, "failed")
    assert (row["attempts"], row["last_error"]) == (1, "HTTP 400")
    time.sleep(0.3)  # well past the backoff: no second try
    assert len(receiver.at("/bad")) == 1
    webhooks.close()


def test_deliveries_pending_at_shutdown_are_sent_at_the_next_start(tmp_path, receiver):
    receiver.script["/later"] = [503, 200]
    slow = ["serve.webhook_backoff=60", "serve.webhook_timeout=0.3"]  # the retry would come after the server stopped
    before = hooks(tmp_path, receiver, "/later", "/gone", settings=slow)
    receiver.script["/gone"] = [503]
    later, gone = before.emit("closed", {"conversation_id": "c1", "agent": "kim"})
    until(lambda: all(d["attempts"] == 1 for d in before.recent()))
    before.close()
    assert {d["status"] for d in before.recent()} == {"pending"}

    after = hooks(tmp_path, receiver, "/later", settings=slow)  # restarted without the /gone receiver
    row = delivery(after, later, "delivered")
    assert row["attempts"] == 2 and receiver.at("/later")[0]["body"] == receiver.at("/later")[1]["body"]
    assert (delivery(after, gone)["status"], delivery(after, gone)["last_error"]) == ("failed", "its receiver is no longer configured")
    after.close()


# --- the service's events --------------------------------------------------------------------------------------


def test_the_service_emits_each_event_where_it_happens(home_config, receiver):
    from ui.service import SupportService

    home_config.serve.webhooks = [f"{receiver.base}/all secret={SECRET}", f"{receiver.base}/closed events=closed secret={SECRET}"]
    home_config.serve.webhook_backoff = [0.05]
    home_config.answer.answer_while_waiting = 0  # acknowledge messages while waiting (no retrieval, no model: fast)
    service = SupportService(home_config)
    agent = service.login("agent", "agent")["token"]

    def events(n: int) -> list[dict]:
        got = until(lambda: len(receiver.at("/all")) >= n and receiver.at("/all"))
        assert all(r["verified"] for r in got)
        return [json.loads(r["body"]) for r in got]

    # The bot hands off a customer's turn (here because it asks for a person: the same path as a hand-off for want of
    # an answer, without loading the embedder): once, not again for a message while waiting.
    *_, done = service.chat("I want to talk to a person about paying with seashells, see https://shells.example.com/pay "
                            "or mail me at kim@example.com")
    conversation = done["reply"]["conversation_id"]
    assert done["reply"]["handed_off"]
    list(service.chat("Hello? Anyone there?", conversation))
    (handoff,) = events(1)
    data = handoff["data"]
    assert handoff["event"] == "handoff" and data["conversation_id"] == conversation and data["reason"] == "human"
    assert data["reason_text"] == "the customer asked for a person" and data["channel"] == "web"
    assert "seashells" in data["last_customer_message"] and "kim@example.com" not in json.dumps(handoff)  # redacted as logged
    assert "seashells" in data["summary"] and "[link]" in data["summary"] and "https://" not in data["summary"]

    # The customer asks for a person with the button: once.
    asked = service.talk_to_person("")
    assert service.talk_to_person(asked["conversation_id"])["message_id"] == 0  # already waiting: nothing new
    button = events(2)[1]["data"]
    assert (button["conversation_id"], button["reason"], button["last_customer_message"]) == (asked["conversation_id"], "human", "")

    # An agent replies, then closes the conversation (twice: announced once).
    service.send(agent, conversation, "rejected", "We take cards only; write to me at agent.kim@example.com.", "")
    reply = events(3)[2]
    assert reply["event"] == "agent_reply" and reply["data"]["agent"] == "agent" and reply["data"]["action"] == "rejected"
    assert reply["data"]["text"].startswith("We take cards only") and "agent.kim@example.com" not in reply["data"]["text"]
    service.close(agent, conversation)
    service.close(agent, conversation)
    closed = events(4)[3]
    assert (closed["event"], closed["data"]) == ("closed", {"conversation_id": conversation, "agent": "agent"})
    (only,) = until(lambda: receiver.at("/closed"))  # the receiver of closed events only got that one
    assert only["verified"] and json.loads(only["body"])["data"]["conversation_id"] == conversation

    # The customer rates the bot's reply.
    service.rate(done["reply"]["message_id"], False, "Useless. Call me on 07700 900123")
    rated = events(5)[4]
    assert rated["event"] == "rated" and rated["data"]["message_id"] == done["reply"]["message_id"]
    assert (rated["data"]["conversation_id"], rated["data"]["rating"]) == (conversation, -1)
    assert rated["data"]["comment"].startswith("Useless.") and "900123" not in rated["data"]["comment"]

    time.sleep(0.2)
    assert len(receiver.at("/all")) == 5 and len(receiver.at("/closed")) == 1
    ops = service.login("ops", "ops")["token"]
    deliveries = service.webhook_deliveries(ops)
    assert len(deliveries) == 6 and {d["status"] for d in deliveries} == {"delivered"}
    assert "body" not in deliveries[0] and deliveries[0]["event"] == "rated"  # newest first
    service.webhooks.close()
