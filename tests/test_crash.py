"""SIGKILL at the worst moments: while the server writes messages, while a large file is ingested, while the
nightly `learn` trains a version, and while one of two replicas on one PostgreSQL database takes customers. After
each, the databases pass SQLite's checks, the dense index and the store agree, everything acknowledged before
the kill is there, and the promoted model (or the other replica) still serves.

Real processes (`python -m ui.cli ...`), killed with SIGKILL, on the tiny random models."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import httpx
import numpy as np
import pytest
from gradio_door import GradioError, rest_call
from helpers import write

from chatbot import ConversationLog, load_config
from retrieval import KnowledgeBase
from retrieval.kb import EMBED_CHUNK
from ui.cli import main

FAQ = """id,question,answer,title,category,url
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
gift-exp,Is there an expiry date on gift cards?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,
phone,What is your phone number?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support,Contact,
"""
WORDS = "order parcel refund voucher kayak tent stove lantern hammock paddle jacket boots warranty invoice courier".split()


@pytest.fixture
def overrides(tmp_path, tiny_embedder_path, tiny_lm_path) -> list[str]:
    gate = write(tmp_path / "gate.csv", "question,answer\nDo gift cards expire?,Gift cards never expire.\nWhat is the weather on Mars?,\n")
    return [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=8",
            "model.temperature=1.0", "answer.handoff_confidence=0.0", "answer.mode=generate",
            "answer.grounding_min=0.0", "limits.chat_per_session=10000", "limits.chat_per_address=10000",
            f"gate.eval_file={gate}", "gate.max_new_tokens=8", "gate.heldout_share=0.0"]


@pytest.fixture
def home(tmp_path, overrides) -> Path:
    home = tmp_path / "home"
    assert main(["kb", "add", str(write(tmp_path / "faq.csv", FAQ)), "--home", str(home), "-q",
                 *[f"--set={o}" for o in overrides]]) == 0
    return home


def cli(home: Path, overrides: list[str], *args: str) -> list[str]:
    """The command line of `supportbot ARGS` on this home, as a separate Python process."""
    return [sys.executable, "-m", "ui.cli", *args, "--home", str(home), *[f"--set={o}" for o in overrides]]


def start(command: list[str], stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(command, stderr=stderr, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL


def wait_for_line(process: subprocess.Popen, prefix: str) -> str:
    """Read the process's stderr until a line starts with `prefix` (it must appear before the process ends)."""
    for line in process.stderr:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the process ended (exit {process.wait()}) before printing {prefix!r}")


def assert_sound(database: Path) -> None:
    """SQLite's own check of the file, and of the full-text index against its table where there is one."""
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'units_fts'").fetchone():
            db.execute("INSERT INTO units_fts(units_fts, rank) VALUES ('integrity-check', 1)")


def assert_index_agrees(config) -> int:
    """The dense index holds exactly the store's embedded units, each found by its own vector, and every
    entry is found by its title; returns the entry count."""
    assert_sound(config.kb_dir() / "kb.sqlite")
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    try:
        index = kb.dense_index().index
        indexed = faiss.vector_to_array(index.id_map)
        with kb.store.snapshot() as store:
            units = store.db.tuples("SELECT uid, vector_key FROM units WHERE vector_key IS NOT NULL")
            vectors = {k: np.frombuffer(v, dtype=np.float32) for k, v in store.db.tuples("SELECT key, vector FROM vectors")}
            titles = store.db.tuples("SELECT id, title FROM entries")
        assert sorted(indexed.tolist()) == sorted(uid for uid, _ in units)
        for _, key in units[:: max(1, len(units) // 200)]:
            scores, _ = index.search(vectors[key].reshape(1, -1), 1)
            assert scores[0][0] > 0.999  # the unit itself (or a unit with the same text)
        for entry_id, title in titles[:: max(1, len(titles) // 200)]:
            assert entry_id in [h.entry_id for h in kb.search(title, k=10, mode="lexical")]
        return len(titles)
    finally:
        kb.close()


# --- the server, while it writes messages ------------------------------------------------------------


@dataclass
class Acknowledged:
    """What the server confirmed to one customer: its question and reply, and the rating it stored."""

    conversation_id: str
    question: str
    reply: str
    feedback_id: int | None = None


class Server:
    """`supportbot serve` on a free loopback port, in its own process."""

    def __init__(self, home: Path, overrides: list[str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = home.parent / f"serve-{port}.log"  # a file, not a pipe: nobody reads it while the server runs
        with open(self.log, "w") as log:
            self.process = start(cli(home, overrides, "serve", "--port", str(port)), stderr=log)
        deadline = time.time() + 120
        while time.time() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def ask(self, question: str) -> dict:
        response = httpx.post(f"{self.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]}, timeout=60)
        response.raise_for_status()
        return response.json()


def customer(url: str, n: int, stop: threading.Event, acknowledged: list[Acknowledged], errors: list[str]) -> None:
    """Ask question after question until stopped; odd customers use the OpenAI endpoint, even ones the
    Gradio API (and rate each reply there). Failures count as errors only before the kill."""
    with httpx.Client(base_url=url, timeout=60) as client:
        for turn in range(1000):
            question = f"Customer {n}, turn {turn}: do gift cards expire?"
            try:
                if n % 2:
                    body = {"messages": [{"role": "user", "content": question}], "user": f"customer-{n}"}
                    response = client.post("/v1/chat/completions", json=body)
                    response.raise_for_status()
                    reply = response.json()
                    acknowledged.append(Acknowledged(reply["conversation_id"], question, reply["choices"][0]["message"]["content"]))
                else:
                    reply = rest_call(client, "chat", question, "")["reply"]
                    ack = Acknowledged(reply["conversation_id"], question, reply["answer"])
                    acknowledged.append(ack)
                    ack.feedback_id = rest_call(client, "rate", reply["message_id"], True, "")["feedback_id"]
            except (httpx.HTTPError, GradioError, ValueError, TypeError, KeyError) as err:
                if not stop.is_set():
                    errors.append(f"customer {n}: {err!r}")
                return
            if stop.is_set():
                return


def kill_while_busy(urls: list[str], process: subprocess.Popen) -> list[Acknowledged]:
    """Six customers at once over `urls` (in turn), never waiting between turns; once 12 replies are acknowledged,
    SIGKILL `process` with requests in flight. Returns what was acknowledged before the kill."""
    stop, acknowledged, errors = threading.Event(), [], []
    customers = [threading.Thread(target=customer, args=(urls[n % len(urls)], n, stop, acknowledged, errors)) for n in range(6)]
    for thread in customers:
        thread.start()
    deadline = time.time() + 120
    while len(acknowledged) < 12 and time.time() < deadline and not errors:
        time.sleep(0.05)
    stop.set()  # from here on a failed request is one the kill cut
    kill(process)
    for thread in customers:
        thread.join(60)
    assert not errors and len(acknowledged) >= 12
    return acknowledged


def assert_kept(acknowledged: list[Acknowledged], log: ConversationLog) -> set[tuple]:
    """Every acknowledged question, reply and rating is in the log; returns the stored (conversation, role, text)."""
    stored = {(r["conversation_id"], r["role"], r["text"]) for r in log.db.rows("SELECT conversation_id, role, text FROM messages")}
    for ack in acknowledged:
        assert {(ack.conversation_id, "customer", ack.question), (ack.conversation_id, "bot", ack.reply)} <= stored, ack
    assert {a.feedback_id for a in acknowledged if a.feedback_id} <= {f["id"] for f in log.feedback()}
    return stored


@pytest.fixture
def promoted(home, overrides, registry) -> str:
    """A trained version, promoted: what must keep serving through every crash."""
    flags = ["-q", "--home", str(home), *[f"--set={o}" for o in overrides]]
    assert main(["train", "sft", "--max-steps", "1", "--batch-size", "2", *flags]) == 0
    version = registry(home).resolve("latest")
    assert main(["models", "promote", version, "--force", *flags]) == 0
    return version


def test_sigkill_while_the_server_writes_messages_loses_nothing_acknowledged(home, overrides, promoted):
    server = Server(home, overrides)
    acknowledged = kill_while_busy([server.url], server.process)

    config = load_config(home, overrides, env={})
    assert_sound(config.log_file)
    log = ConversationLog(config.log_file)
    assert_kept(acknowledged, log)
    log.close()
    assert_index_agrees(config)

    again = Server(home, overrides)
    try:
        assert again.ask("Do gift cards expire?")["model"] == promoted
    finally:
        kill(again.process)


# --- ingesting a large file ---------------------------------------------------------------------------


def big_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    lines = ["id,question,answer,title,category"]
    for i in range(rows):
        a, b, c, d = rng.choice(WORDS, 4, replace=False)
        lines.append(f"bulk-{i},How does {a} {b} work for item {i}?,Item {i}: {c} and {d} are covered.,Bulk item {i} {a},Bulk")
    return write(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("moment", ["embed ", "embed 20000/20000"], ids=["while embedding", "while committing"])
def test_sigkill_mid_ingest_leaves_the_index_and_the_store_agreeing(home, overrides, tmp_path, moment):
    config = load_config(home, overrides, env={})
    before = assert_index_agrees(config)
    big = big_csv(tmp_path / "big.csv", 20_000)
    process = start(cli(home, overrides, "kb", "add", str(big)))
    wait_for_line(process, f"progress: {moment}")
    kill(process)

    after = assert_index_agrees(config)
    assert after in (before, before + 20_000)  # all of the file or none of it

    resumed = subprocess.run(cli(home, overrides, "kb", "add", str(big), "--json", "-q"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert assert_index_agrees(config) == before + 20_000


def test_an_interrupted_ingest_resumes_from_the_vectors_it_had_embedded(make_kb, tmp_path):
    kb = make_kb()
    big = big_csv(tmp_path / "big.csv", EMBED_CHUNK + 100)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "embed" and done > EMBED_CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kb.add([big], progress=interrupt)
    assert kb.store.counts()["entries"] == 0
    report = kb.add([big])
    assert (report.added, report.embedded) == (EMBED_CHUNK + 100, 100)


# --- a training run, while it writes a version ----------------------------------------------------------


def test_sigkill_mid_training_leaves_the_promoted_version_serving(home, overrides, promoted, registry):
    """The nightly `learn` killed while it trains the model: nothing half-applied, the promoted version serves on, and
    the next run (which finds the killed run's state unwritten) does the work again."""
    config = load_config(home, overrides, env={})
    log = ConversationLog(config.log_file)  # an agent's approved reply: what `learn` trains on
    conversation = log.start("web")
    log.add_message(conversation, "customer", "Do gift cards expire?")
    draft = log.add_message(conversation, "bot", "Gift cards never expire and have no fees.")
    log.add_agent_action(conversation, draft, "Gift cards never expire and have no fees.", "approved", "ann")
    log.close()
    learning = [*overrides, "learn.min_new_replies=1", 'learn.roles=["lm"]']
    process = start(cli(home, [*learning, "learn.max_steps=500"], "learn"))
    wait_for_line(process, "step 2/")  # training, with its unfinished version folder on disk
    assert list(registry(home).root.glob("*.partial"))
    kill(process)

    versions = registry(home)
    assert promoted in [c.version for c in versions.cards()] and versions.serving_version("lm") == promoted
    assert versions.resolve("latest") == promoted  # the killed run left no version behind
    assert not (home / "learn" / "state.json").exists()  # so the next run reads the same replies again
    server = Server(home, overrides)
    try:
        assert server.ask("Do gift cards expire?")["model"] == promoted
    finally:
        kill(server.process)

    # The next run trains again, and clears the killed run's unfinished folder (it may hold a whole model's weights).
    assert main(["learn", "-q", "--home", str(home), *[f"--set={o}" for o in [*learning, "learn.max_steps=1"]]]) == 0
    assert not list(versions.root.glob("*.partial")) and (home / "learn" / "state.json").exists()
    assert versions.resolve("latest") != promoted


# --- two replicas on one PostgreSQL database ---------------------------------------------------------------


def test_two_replicas_share_the_queue_and_sessions_and_a_killed_one_loses_nothing_acknowledged(home, overrides, postgres_cluster):
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    url = postgres_cluster.new_database()
    shared = [*overrides, f"storage.database_url={url}"]
    assert main(["db", "copy", "--to", url, "--home", str(home), "-q"]) == 0  # the home's knowledge base and log
    other_home = shutil.copytree(home, home.parent / "home-b")  # each replica its own home (models, index files)
    with ThreadPoolExecutor(2) as pool:  # started together: they migrate the new database once between them
        first, second = pool.map(lambda h: Server(h, shared), (home, other_home))
    try:
        with httpx.Client(base_url=second.url, timeout=60) as on_second, httpx.Client(base_url=first.url, timeout=60) as on_first:
            handed_off = rest_call(on_second, "chat", "I want to talk to a human", "")["reply"]
            token = rest_call(on_second, "login", "agent", "agent")["token"]
            queue = rest_call(on_first, "queue", token)["items"]  # the other replica's queue, with this replica's session
        assert [item["conversation_id"] for item in queue] == [handed_off["conversation_id"]]
        lockers = "id,question,answer\nlockers,Can I pick up my parcel from a locker?,Yes: any parcel locker within 7 days.\n"
        assert main(["kb", "add", str(write(home.parent / "lockers.csv", lockers)), "--home", str(home), "-q",
                     *[f"--set={o}" for o in shared]]) == 0  # a knowledge-base change made on the first replica's home
        assert second.ask("Can I pick up my parcel from a locker?")["sources"][0]["id"] == "lockers"

        acknowledged = kill_while_busy([first.url, second.url], first.process)  # its customers have requests in flight
        after = second.ask("Do gift cards expire?")  # the other replica serves on
    finally:
        for server in (first, second):
            if server.process.poll() is None:
                kill(server.process)

    log = ConversationLog(shared[-1].partition("=")[2])
    stored = assert_kept(acknowledged, log)
    assert (after["conversation_id"], "bot", after["choices"][0]["message"]["content"]) in stored
    log.close()
