"""Load benchmark: many customers at once through both doors of `supportbot serve`, and nothing lost.

Protocol (the real server as a subprocess, the real bundled models, talking to 127.0.0.1 only):

1. A fresh home (or `--home`) gets the demo knowledge base (`supportbot kb add data/kb`), then
   `supportbot serve` starts on a free loopback port. Its per-address chat limit is raised with `--set`:
   all the load comes from 127.0.0.1, which the default limit would rightly refuse as one flooding client.
   The per-session limit stays at its default unless `--turns` exceeds it.
2. `--customers` simulated customers (default 50) send `--turns` messages each (default 10), all at once.
   Even-numbered ones use the OpenAI-compatible `POST /v1/chat/completions` (plain or streamed by turn;
   earlier turns go along in `messages`, so each call is a new logged conversation of channel api with
   those turns logged again); odd-numbered ones use Gradio's API `/chat` (streamed, one conversation kept
   across turns). Questions come from data/eval/retrieval.csv, with out-of-scope questions
   (data/eval/answers.csv rows without an answer) and requests for a person mixed in; a fixed seed picks
   them, and picks which replies get a thumbs up or down (`/rate`) and after which turns a customer
   presses "talk to a person" (`/talk_to_person`).
3. Meanwhile `--agents` agents (default 2) sign in, poll `/queue`, `/review` what waits and `/send` a
   reply (approved, edited and rejected in turn), closing every third conversation they answer (`/close`),
   until the customers are done.
4. A ledger keeps what the server acknowledged: conversation and message ids, feedback ids, agent action
   ids. Once the server has stopped, its SQLite log is opened read-only: every acknowledged message (per
   conversation and role: the customer's message and the bot's reply of each turn, the hand-off
   messages, the agents' replies), rating and agent action must be stored, and nothing this run did not
   acknowledge (rows of an earlier run in a reused `--home` are left out by id).

5. With `--database URL` (an empty PostgreSQL database), the same load runs again on `--replicas` (default 2)
   `supportbot serve` processes, each with its own home (and its own copy of the demo knowledge base), all on
   that database and on one models folder (the first home's, `storage.models_dir`); customer i and agent i
   go to replica i mod n. The log is checked in that database the same way, and the calls' p50 / p95 are
   printed against the one replica on SQLite of the same run.

Every loop is bounded by count and by `--timeout` (seconds for the whole load); each request ends by that
deadline too. Latency is measured at the client, over the calls that succeeded.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/load.py [--customers 50] [--turns 10] [--max-new-tokens 100]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/load.py --database postgresql://user:pw@host:5432/empty --replicas 2

Results go to bench/results/load.json and the servers' own output to bench/results/load-server*.log; the
tables to stdout, progress to stderr. Exit status 1 when any request failed or anything acknowledged is
missing from the log.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Python puts this file's folder first on the path, where bench/retrieval.py would shadow the `retrieval` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from chatbot.config import Config, ModelSettings, RateLimits  # noqa: E402
from chatbot.log import open_database  # noqa: E402
from retrieval.database import redacted  # noqa: E402

HOST = "127.0.0.1"
RESULTS = ROOT / "bench" / "results"
DEMO_KB = ROOT / "data" / "kb"
EVAL = ROOT / "data" / "eval"
HANDOFF_REQUESTS = ("I want to talk to a person", "Can I speak to a human agent please?", "transfer me to an agent")
HANDOFF_SHARE = 0.05
OUT_OF_SCOPE_SHARE = 0.12
RATING_SHARE = 0.3
THUMBS_UP_SHARE = 0.7
COMMENTS = ("", "", "helpful, thanks", "this did not answer my question")
TALK_TO_PERSON_SHARE = 0.15  # of customers, once each, after a turn drawn at random
ACTIONS = ("approved", "edited", "rejected")
CHAT_KINDS = ("openai", "openai-stream", "gradio-chat")
EDIT_NOTE = "Let me know if there is anything else I can do."
OWN_REPLY = "Thanks for waiting. I have looked into this and will follow up by email within one business day."
REQUEST_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 600.0  # the first start in a fresh home converts the bundled model
AGENT_POLL_S = 1.0
AGENT_ITEMS_PER_PASS = 3
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- the plan: what each customer will say and do (fixed by the seed) --------------------------------


@dataclass
class TurnPlan:
    question: str
    stream: bool  # the OpenAI door only: ask for server-sent events
    rating: tuple[bool, str] | None  # thumbs up?, comment: given to this turn's reply
    talk_to_person: bool  # press "talk to a person" after this turn


@dataclass
class CustomerPlan:
    number: int
    door: str  # "openai" or "gradio"
    turns: list[TurnPlan]


def load_questions() -> tuple[list[str], list[str]]:
    """In-scope queries (retrieval eval) and out-of-scope questions (answer eval rows without an answer)."""
    with (EVAL / "retrieval.csv").open(encoding="utf-8") as f:
        in_scope = [row["query"] for row in csv.DictReader(f)]
    with (EVAL / "answers.csv").open(encoding="utf-8") as f:
        out_of_scope = [row["question"] for row in csv.DictReader(f) if not row["answer"].strip()]
    return in_scope, out_of_scope


def plan_customers(customers: int, turns: int, seed: int) -> list[CustomerPlan]:
    in_scope, out_of_scope = load_questions()
    rng = random.Random(seed)
    plans = []
    for number in range(customers):
        person_after = rng.randrange(turns) if rng.random() < TALK_TO_PERSON_SHARE else -1
        steps = []
        for turn in range(turns):
            draw = rng.random()
            pool = HANDOFF_REQUESTS if draw < HANDOFF_SHARE else out_of_scope if draw < HANDOFF_SHARE + OUT_OF_SCOPE_SHARE else in_scope
            rating = (rng.random() < THUMBS_UP_SHARE, rng.choice(COMMENTS)) if rng.random() < RATING_SHARE else None
            steps.append(TurnPlan(rng.choice(pool), rng.random() < 0.5, rating, turn == person_after))
        plans.append(CustomerPlan(number, "openai" if number % 2 == 0 else "gradio", steps))
    return plans


# --- the ledger: every call, and what the server acknowledged -----------------------------------------


class Refused(Exception):
    """The server answered, but not with a result: an HTTP error status or a Gradio error event."""


@dataclass
class Call:
    kind: str  # openai, openai-stream, gradio-chat, history, rate, talk_to_person, login, queue, review, send, close
    seconds: float
    error: str = ""  # "" when it succeeded, else "<what went wrong>: <message>"


@dataclass
class Acknowledged:
    """What the server said it stored in one conversation."""

    customer: int = 0
    bot: int = 0
    agent: int = 0
    bot_ids: set[int] = field(default_factory=set)


class Ledger:
    """Shared by all the simulated people's threads."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.calls: list[Call] = []
        self.conversations: dict[str, Acknowledged] = defaultdict(Acknowledged)
        self.feedback: dict[int, tuple[int, int]] = {}  # feedback id -> (message id, rating)
        self.actions: dict[int, tuple[str, str]] = {}  # action id -> (conversation id, action)
        self.sent = Counter()  # items a request asked the server to store, acknowledged or not
        self.skipped_turns = 0  # not sent: the deadline came first
        self._claimed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def timed(self, kind: str, fn: Callable[[float], object]):
        """`fn(until)`'s result, or None when it failed; either way the call is recorded."""
        until = min(time.monotonic() + REQUEST_TIMEOUT_S, self.deadline)
        started = time.perf_counter()
        error = ""
        result = None
        try:
            result = fn(until)
        except httpx.TimeoutException as err:
            error = f"timeout: {type(err).__name__} {err}"
        except httpx.HTTPError as err:
            error = f"connection: {type(err).__name__} {err}"
        except Refused as err:
            error = f"refused: {err}"
        except (KeyError, TypeError, ValueError) as err:
            error = f"bad response: {type(err).__name__} {err}"
        with self._lock:
            self.calls.append(Call(kind, time.perf_counter() - started, error[:300]))
        return None if error else result

    def turns_answered(self) -> int:
        with self._lock:
            return sum(c.kind in CHAT_KINDS and not c.error for c in self.calls)

    def count_sent(self, item: str, n: int = 1) -> None:
        with self._lock:
            self.sent[item] += n

    def stored(self, conversation_id: str, customer: int = 0, bot: int = 0, agent: int = 0, bot_id: int = 0) -> None:
        with self._lock:
            c = self.conversations[conversation_id]
            c.customer += customer
            c.bot += bot
            c.agent += agent
            if bot_id:
                c.bot_ids.add(bot_id)

    def rated(self, feedback_id: int, message_id: int, thumbs_up: bool) -> None:
        with self._lock:
            self.feedback[feedback_id] = (message_id, 1 if thumbs_up else -1)

    def acted(self, action_id: int, conversation_id: str, action: str) -> None:
        with self._lock:
            self.actions[action_id] = (conversation_id, action)
            self.conversations[conversation_id].agent += 1

    def skip(self, turns: int) -> None:
        with self._lock:
            self.skipped_turns += turns

    def claim(self, item: dict) -> bool:
        """An agent takes a queue item (a conversation and since when it waits); False if another has."""
        key = (item["conversation_id"], item["waiting_since"])
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed.add(key)
            return True


# --- the two doors ------------------------------------------------------------------------------------


def _timeout(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise httpx.TimeoutException("the run's deadline passed")
    return left


def _refusal(response: httpx.Response) -> Refused:
    response.read()
    try:
        message = response.json().get("error", {}).get("message") or response.text
    except ValueError:
        message = response.text
    return Refused(f"HTTP {response.status_code}: {str(message)[:200]}")


class Gradio:
    """One browser session on Gradio's plain HTTP API: `POST /gradio_api/call/NAME`, then its event stream."""

    def __init__(self, http: httpx.Client):
        self.http = http
        self.session = uuid.uuid4().hex[:12]

    def events(self, name: str, data: list, until: float) -> Iterator[tuple[str, object]]:
        started = self.http.post(f"/gradio_api/call/{name}", json={"data": data, "session_hash": self.session}, timeout=_timeout(until))
        if started.status_code != 200:
            raise _refusal(started)
        event_id = started.json()["event_id"]
        with self.http.stream("GET", f"/gradio_api/call/{name}/{event_id}", timeout=_timeout(until)) as stream:
            if stream.status_code != 200:
                raise _refusal(stream)
            kind = ""
            for line in stream.iter_lines():
                _timeout(until)
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: ") and kind != "heartbeat":
                    yield kind, json.loads(line[len("data: "):])

    def call(self, name: str, *data, until: float):
        """The function's result (the last one, for a streaming function)."""
        for kind, payload in self.events(name, list(data), until):
            if kind == "complete":
                return payload[0]
            if kind == "error":
                raise Refused(str(payload.get("error") if isinstance(payload, dict) else payload)[:200])
        raise Refused(f"/{name}: the event stream ended without a result")


def openai_chat(http: httpx.Client, messages: list[dict], stream: bool, user: str, until: float) -> tuple[str, str]:
    """One chat completion: the reply's text and the conversation it was logged as."""
    body = {"model": "supportbot", "messages": messages, "stream": stream, "user": user}
    if not stream:
        response = http.post("/v1/chat/completions", json=body, timeout=_timeout(until))
        if response.status_code != 200:
            raise _refusal(response)
        data = response.json()
        return data["choices"][0]["message"]["content"], data["conversation_id"]
    with http.stream("POST", "/v1/chat/completions", json=body, timeout=_timeout(until)) as response:
        if response.status_code != 200:
            raise _refusal(response)
        text, final = "", None
        for line in response.iter_lines():
            _timeout(until)
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            text += chunk["choices"][0]["delta"].get("content", "")
            if chunk["choices"][0]["finish_reason"]:
                final = chunk
    if final is None:
        raise ValueError("the stream ended without its final chunk")
    return final.get("replaced_content", text), final["conversation_id"]


# --- the simulated people -----------------------------------------------------------------------------


def run_customer(plan: CustomerPlan, base_url: str, ledger: Ledger, think_s: float) -> None:
    pause = random.Random(plan.number)
    with httpx.Client(base_url=base_url) as http:
        gradio = Gradio(http)
        transcript: list[dict] = []  # the OpenAI door's conversation so far
        conversation = ""  # the Gradio door's conversation
        for i, turn in enumerate(plan.turns):
            if time.monotonic() >= ledger.deadline:
                ledger.skip(len(plan.turns) - i)
                return
            if plan.door == "openai":
                found = openai_turn(http, gradio, ledger, transcript, turn, f"load-{plan.number}")
            else:
                found = gradio_turn(gradio, ledger, conversation, turn.question)
                conversation = found[0] if found else conversation
            if found:
                follow_up(gradio, ledger, turn, *found)
            time.sleep(min(pause.uniform(0, think_s), max(0.0, ledger.deadline - time.monotonic())))


def gradio_turn(gradio: Gradio, ledger: Ledger, conversation: str, question: str) -> tuple[str, int] | None:
    """Send one message; the conversation id and the bot reply's message id (0: the bot stayed quiet,
    a person has the conversation)."""
    ledger.count_sent("customer")
    final = ledger.timed("gradio-chat", lambda until: gradio.call("chat", question, conversation, until=until))
    if final is None:
        return None
    reply = final["reply"]
    ledger.stored(reply["conversation_id"], customer=1, bot=1 if reply["message_id"] else 0, bot_id=reply["message_id"])
    return reply["conversation_id"], reply["message_id"]


def openai_turn(http: httpx.Client, gradio: Gradio, ledger: Ledger, transcript: list[dict], turn: TurnPlan, user: str) -> tuple[str, int] | None:
    """Send the transcript and the new question: a new logged conversation holding all of it. The reply's
    message id, when the turn is to be rated, comes from `/history` (the OpenAI reply does not carry it)."""
    messages = [*transcript, {"role": "user", "content": turn.question}]
    users = sum(m["role"] == "user" for m in messages)
    ledger.count_sent("customer", users)
    kind = "openai-stream" if turn.stream else "openai"
    answered = ledger.timed(kind, lambda until: openai_chat(http, messages, turn.stream, user, until))
    if answered is None:
        return None
    text, conversation = answered
    ledger.stored(conversation, customer=users, bot=len(messages) - users + 1)
    transcript[:] = [*messages, {"role": "assistant", "content": text}]
    if not turn.rating:
        return conversation, 0
    history = ledger.timed("history", lambda until: gradio.call("history", conversation, until=until))
    bot_ids = [m["id"] for m in history or [] if m["role"] == "bot"]
    return conversation, bot_ids[-1] if bot_ids else 0


def follow_up(gradio: Gradio, ledger: Ledger, turn: TurnPlan, conversation: str, message_id: int) -> None:
    """Rate the reply and ask for a person, where the plan says so."""
    if turn.rating and message_id:
        thumbs_up, comment = turn.rating
        ledger.count_sent("feedback")
        rated = ledger.timed("rate", lambda until: gradio.call("rate", message_id, thumbs_up, comment, until=until))
        if rated is not None:
            ledger.rated(rated["feedback_id"], message_id, thumbs_up)
    if turn.talk_to_person:
        handed = ledger.timed("talk_to_person", lambda until: gradio.call("talk_to_person", conversation, until=until))
        if handed is not None:  # asked again while waiting, nothing new is posted (message id 0)
            ledger.stored(handed["conversation_id"], bot=1 if handed["message_id"] else 0, bot_id=handed["message_id"])


def run_agent(base_url: str, ledger: Ledger, account: tuple[str, str], customers_done: threading.Event, max_passes: int) -> None:
    """Sign in, then answer what waits in the queue until the customers are done."""
    with httpx.Client(base_url=base_url) as http:
        gradio = Gradio(http)
        session = ledger.timed("login", lambda until: gradio.call("login", *account, until=until))
        if session is None:
            return
        token, answered = session["token"], 0
        for _ in range(max_passes):
            if customers_done.is_set() or time.monotonic() >= ledger.deadline:
                return
            queue = ledger.timed("queue", lambda until: gradio.call("queue", token, until=until))
            items = [i for i in (queue or {"items": []})["items"] if ledger.claim(i)][:AGENT_ITEMS_PER_PASS]
            for item in items:
                if answer(gradio, ledger, token, item["conversation_id"], ACTIONS[answered % len(ACTIONS)], close=answered % 3 == 2):
                    answered += 1
            if not items:
                time.sleep(AGENT_POLL_S)


def answer(gradio: Gradio, ledger: Ledger, token: str, conversation: str, action: str, close: bool) -> bool:
    """Review one conversation and send a reply (approved, edited or rejected); False if a call failed."""
    review = ledger.timed("review", lambda until: gradio.call("review", token, conversation, until=until))
    if review is None:
        return False
    suggested = review["suggestion"]
    if not suggested["text"].strip():  # nothing to approve or edit
        action = "rejected"
    text = {"approved": suggested["text"], "edited": f"{suggested['text']} {EDIT_NOTE}", "rejected": OWN_REPLY}[action]
    ledger.count_sent("agent")
    sent = ledger.timed("send", lambda until: gradio.call("send", token, conversation, action, text, suggested["text"],
                                                          suggested["draft_message_id"], until=until))
    if sent is None:
        return False
    ledger.acted(sent["action_id"], conversation, action)
    if close:
        ledger.timed("close", lambda until: gradio.call("close", token, conversation, until=until))
    return True


def run_load(plans: list[CustomerPlan], urls: list[str], agents: int, account: tuple[str, str], timeout_s: float, think_s: float) -> Ledger:
    """Customers and agents spread over the replicas at `urls` in turn (customer i and agent i on replica i mod n)."""
    ledger = Ledger(time.monotonic() + timeout_s)
    customers_done = threading.Event()
    turns = sum(len(p.turns) for p in plans)
    with ThreadPoolExecutor(max_workers=len(plans) + agents) as pool:
        staff = [pool.submit(run_agent, urls[i % len(urls)], ledger, account, customers_done, int(timeout_s / AGENT_POLL_S) + turns)
                 for i in range(agents)]
        customers = [pool.submit(run_customer, plan, urls[i % len(urls)], ledger, think_s) for i, plan in enumerate(plans)]
        while wait(customers, timeout=30).not_done:
            log(f"{ledger.turns_answered()}/{turns} turns answered, {len(ledger.feedback)} ratings, {len(ledger.actions)} agent replies")
        customers_done.set()
        for future in [*customers, *staff]:
            future.result()  # a failure of the bench itself surfaces here
    return ledger


# --- the server ---------------------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ui.cli", *args]


def child_env() -> dict[str, str]:
    """This environment without SUPPORTBOT_* settings (the bench sets its own), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def server_settings(customers: int, turns: int, max_new_tokens: int, answer_mode: str) -> list[str]:
    defaults = RateLimits()
    settings = [f"limits.chat_per_address={max(defaults.chat_per_address, 2 * customers * turns)}",
                f"model.max_new_tokens={max_new_tokens}", f"answer.mode={answer_mode}"]
    if turns > defaults.chat_per_session:
        settings.append(f"limits.chat_per_session={turns}")
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, settings: list[str], output) -> subprocess.Popen:
    command = cli("serve", "--home", str(home), "--host", HOST, "--port", str(port), "--quiet", *[f"--set={s}" for s in settings])
    return subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(base_url: str, server: subprocess.Popen, timeout_s: float) -> float:
    """Seconds until the server answers; raises if it exits or does not answer in time."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before answering")
        try:
            if httpx.get(f"{base_url}/v1/models", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --- checking the log ---------------------------------------------------------------------------------


@dataclass
class Baseline:
    """The highest row ids before this run: rows above them are this run's."""

    message: int = 0
    feedback: int = 0
    action: int = 0

    @classmethod
    def read(cls, database: Path | str) -> Baseline:
        if isinstance(database, Path) and not database.exists():
            return cls()
        db = open_database(database)
        try:
            return cls(*(db.rows(f"SELECT COALESCE(MAX(id), 0) AS n FROM {t}")[0]["n"] for t in ("messages", "feedback", "agent_actions")))
        finally:
            db.close()


@dataclass
class Storage:
    item: str
    sent: int | None  # asked to store (None: made by the server, not sent)
    acknowledged: int
    stored: int  # acknowledged and found
    lost: int  # acknowledged and not found
    unexpected: int  # found, but no acknowledged request accounts for it


def verify(database: Path | str, baseline: Baseline, ledger: Ledger) -> tuple[list[Storage], dict[str, int]]:
    """Each acknowledged item against the log; also the bot replies of this run by how they were made."""
    db = open_database(database)
    try:
        messages = [tuple(r.values()) for r in db.rows("SELECT id, conversation_id, role, mode FROM messages WHERE id > :id ORDER BY id",
                                                       id=baseline.message)]
        feedback = {r["id"]: (r["message_id"], r["rating"]) for r in db.rows("SELECT id, message_id, rating FROM feedback WHERE id > :id",
                                                                             id=baseline.feedback)}
        actions = {r["id"]: (r["conversation_id"], r["action"])
                   for r in db.rows("SELECT id, conversation_id, action FROM agent_actions WHERE id > :id", id=baseline.action)}
    finally:
        db.close()
    counts = Counter((c, role) for _, c, role, _ in messages)
    where = {i: (c, role) for i, c, role, _ in messages}
    rows = []
    for role, sent in (("customer", ledger.sent["customer"]), ("bot", None), ("agent", ledger.sent["agent"])):
        acknowledged = found = 0
        for conversation, ack in ledger.conversations.items():
            expected = getattr(ack, role)
            misplaced = sum(where.get(i) != (conversation, "bot") for i in ack.bot_ids) if role == "bot" else 0
            acknowledged += expected
            found += min(counts[conversation, role], expected - misplaced)
        total = sum(n for (_, r), n in counts.items() if r == role)
        rows.append(Storage(f"{role} messages", sent, acknowledged, found, acknowledged - found, total - found))
    for item, acked, table in (("feedback", ledger.feedback, feedback), ("agent actions", ledger.actions, actions)):
        found = sum(table.get(i) == value for i, value in acked.items())
        rows.append(Storage(item, ledger.sent["feedback" if item == "feedback" else "agent"], len(acked), found, len(acked) - found, len(table) - found))
    modes = Counter((mode or "replayed") for _, _, role, mode in messages if role == "bot")
    return rows, dict(modes)


# --- reporting ----------------------------------------------------------------------------------------


@dataclass
class Latency:
    kind: str
    calls: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


def latencies(calls: list[Call]) -> list[Latency]:
    rows = []
    for kind in dict.fromkeys(c.kind for c in sorted(calls, key=lambda c: _KIND_ORDER.get(c.kind, 99))):
        mine = [c for c in calls if c.kind == kind]
        ok = np.array([c.seconds * 1000 for c in mine if not c.error])
        stats = [round(float(x), 1) for x in (np.percentile(ok, 50), np.percentile(ok, 95), ok.max())] if len(ok) else [None] * 3
        rows.append(Latency(kind, len(mine), sum(bool(c.error) for c in mine), *stats))
    return rows


_KIND_ORDER = {k: i for i, k in enumerate(("openai", "openai-stream", "gradio-chat", "history", "rate", "talk_to_person",
                                           "login", "queue", "review", "send", "close"))}


def error_summary(calls: list[Call], examples: int = 3) -> dict[str, dict]:
    """Errors by call and kind of failure, with the first few messages of each."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for c in calls:
        if c.error:
            grouped[f"{c.kind} {c.error.split(':', 1)[0]}"].append(c.error)
    return {key: {"count": len(errors), "first": errors[:examples]} for key, errors in grouped.items()}


def _cell(value) -> str:
    return "-" if value is None else str(value)


def print_table(rows: list, columns: list[str]) -> None:
    print(f"{columns[0]:16}" + "".join(f"{c:>13}" for c in columns[1:]))
    for row in rows:
        values = asdict(row)
        print(f"{values[columns[0]]:16}" + "".join(f"{_cell(values[c]):>13}" for c in columns[1:]))


def count_tracebacks(server_log: Path) -> int:
    return server_log.read_text(encoding="utf-8", errors="replace").count("Traceback (most recent call last)")


@dataclass
class Outcome:
    """One configuration's run: what was acknowledged, what the log holds, how long calls took."""

    name: str
    ready_s: float
    load_s: float
    ledger: Ledger
    storage: list[Storage]
    modes: dict[str, int]
    calls: list[Latency]
    errors: dict[str, dict]
    tracebacks: int

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.ledger.skipped_turns > 0 or any(s.lost or s.unexpected for s in self.storage)


def run_setup(name: str, homes: list[Path], settings: list[str], database: Path | str, plans: list[CustomerPlan], args) -> Outcome:
    """Ingest the demo knowledge base into each home, start one `supportbot serve` per home (one after another:
    the first converts the bundled model the others share), drive the load over all of them, stop them, and
    check the log in `database`."""
    for home in homes:
        log(f"{name}: ingesting {DEMO_KB} into {home}")
        subprocess.run(cli("kb", "add", str(DEMO_KB), "--home", str(home), "--quiet", *[f"--set={s}" for s in settings]), cwd=ROOT,
                       env=child_env(), check=True, stdout=subprocess.DEVNULL)
    baseline = Baseline.read(database)
    servers, urls, logs, ready_s = [], [], [], 0.0
    try:
        for i, home in enumerate(homes):
            urls.append(f"http://{HOST}:{free_port()}")
            logs.append(RESULTS / f"load-server{'-' + str(i + 1) if len(homes) > 1 else ''}.log")
            with logs[-1].open("w", encoding="utf-8") as output:
                servers.append(start_server(home, int(urls[-1].rsplit(":", 1)[1]), settings, output))
            ready_s += wait_ready(urls[-1], servers[-1], READY_TIMEOUT_S)
        log(f"{name}: ready at {', '.join(urls)} after {ready_s:.0f} s; {args.customers} customers x {args.turns} turns, {args.agents} agents")
        started = time.perf_counter()
        ledger = run_load(plans, urls, args.agents, tuple(args.agent_account.split(":", 1)), args.timeout, args.think)
        load_s = time.perf_counter() - started
    finally:
        for server in servers:
            stop_server(server)
    storage, modes = verify(database, baseline, ledger)
    return Outcome(name, ready_s, load_s, ledger, storage, modes, latencies(ledger.calls), error_summary(ledger.calls),
                   sum(count_tracebacks(path) for path in logs))


def report(outcome: Outcome, args) -> None:
    print(f"{outcome.name}: wall {outcome.ready_s + outcome.load_s:.0f} s (load {outcome.load_s:.0f} s, server start "
          f"{outcome.ready_s:.0f} s), {outcome.ledger.turns_answered() / outcome.load_s:.2f} turns/s")
    print(f"bot replies by mode: {', '.join(f'{k} {v}' for k, v in sorted(outcome.modes.items()))}")
    print()
    print_table(outcome.calls, ["kind", "calls", "errors", "p50_ms", "p95_ms", "max_ms"])
    print()
    print_table(outcome.storage, ["item", "sent", "acknowledged", "stored", "lost", "unexpected"])
    print()
    for key, group in outcome.errors.items():
        print(f"errors {key}: {group['count']}, first: {' | '.join(group['first'])}")
    if outcome.ledger.skipped_turns:
        print(f"turns not sent (the {args.timeout:.0f} s deadline came first): {outcome.ledger.skipped_turns}")
    print(f"server logs: {outcome.tracebacks} tracebacks")
    print(f"result: {'FAIL' if outcome.failed else 'OK'} ({len(outcome.ledger.calls)} requests, "
          f"{sum(g['count'] for g in outcome.errors.values())} errors, {sum(s.lost for s in outcome.storage)} lost, "
          f"{sum(s.unexpected for s in outcome.storage)} unexpected)")
    print()


def compare(outcomes: list[Outcome]) -> None:
    """p50 / p95 of each kind of call, configuration against configuration."""
    names = [o.name for o in outcomes]
    print("| call | " + " | ".join(f"{n} p50 ms | {n} p95 ms" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    by_kind = [{c.kind: c for c in o.calls} for o in outcomes]
    for kind in by_kind[0]:
        cells = [(f"{_cell(k[kind].p50_ms)} | {_cell(k[kind].p95_ms)}" if kind in k else "- | -") for k in by_kind]
        print(f"| {kind} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=50, help="simulated customers at once, half on each door")
    parser.add_argument("--turns", type=int, default=10, help="messages each customer sends")
    parser.add_argument("--agents", type=int, default=2, help="simulated agents answering the queue")
    parser.add_argument("--agent-account", default="agent:agent", metavar="USER:PASSWORD",
                        help="the agents' sign-in (default: the demo account, there while a home configures none)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds the whole load may take (requests end by then)")
    parser.add_argument("--max-new-tokens", type=int, default=ModelSettings().max_new_tokens,
                        help="longest generated reply, in tokens (model.max_new_tokens; default: the product's)")
    parser.add_argument("--answer-mode", choices=["auto", "generate", "template"], default="auto",
                        help="answer.mode: auto (the default) answers confident FAQ matches from templates, generate always generates")
    parser.add_argument("--think", type=float, default=1.0, help="a customer pauses up to this many seconds between turns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database", help="an empty PostgreSQL database: after one replica on SQLite, the same load on "
                                           "--replicas replicas sharing it (and one models folder)")
    parser.add_argument("--replicas", type=int, default=2, help="with --database: how many `supportbot serve` processes")
    parser.add_argument("--home", help="use this home (default: a fresh temporary one, removed at the end)")
    parser.add_argument("--out", default=str(RESULTS / "load.json"))
    args = parser.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="load-"))
    settings = server_settings(args.customers, args.turns, args.max_new_tokens, args.answer_mode)
    plans = plan_customers(args.customers, args.turns, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)

    outcomes = [run_setup("1 replica, SQLite", [home], settings, Config(home=home).log_file, plans, args)]
    if args.database:
        homes = [home.with_name(f"{home.name}-replica-{i + 1}") for i in range(args.replicas)]
        shared = [*settings, f"storage.database_url={args.database}", f"storage.models_dir={home}"]
        outcomes.append(run_setup(f"{args.replicas} replicas, PostgreSQL", homes, shared, args.database, plans, args))

    openai_customers = sum(p.door == "openai" for p in plans)
    print(f"load: {args.customers} customers x {args.turns} turns ({openai_customers} OpenAI, {args.customers - openai_customers} Gradio), "
          f"{args.agents} agents; wall {time.perf_counter() - START:.0f} s")
    print(f"server settings for the load: {' '.join('--set ' + s for s in settings)} (all the load comes from {HOST}: "
          f"the per-address chat limit is raised to cover every message)")
    print()
    for outcome in outcomes:
        report(outcome, args)
    if len(outcomes) > 1:
        compare(outcomes)

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "args": {**vars(args), "database": args.database and redacted(args.database)}, "server_settings": settings,
              "wall_s": round(time.perf_counter() - START, 1),
              "setups": [{"name": o.name, "server_start_s": round(o.ready_s, 1), "load_s": round(o.load_s, 1), "requests": len(o.ledger.calls),
                          "bot_modes": o.modes, "calls": [asdict(c) for c in o.calls], "storage": [asdict(s) for s in o.storage],
                          "errors": o.errors, "skipped_turns": o.ledger.skipped_turns, "server_tracebacks": o.tracebacks,
                          "ok": not o.failed} for o in outcomes]}
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if not args.home:
        for folder in [home, *(home.with_name(f"{home.name}-replica-{i + 1}") for i in range(args.replicas))]:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
