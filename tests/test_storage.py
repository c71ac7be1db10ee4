"""The shared database as operators use it: `db copy` and `db upgrade`, the URL setting, and two app replicas on
one PostgreSQL database sharing the conversation log (the agents' queue, agents' replies), staff sessions and the
knowledge base."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from chatbot import ConversationLog, as_dict, load_config
from chatbot.log import MIGRATIONS
from retrieval.database import head
from ui.cli import main


def test_db_copy_moves_a_homes_log_into_postgresql_and_db_upgrade_finds_it_current(tmp_path, postgres_cluster, capsys,
                                                                                   tiny_embedder, registry):
    from retrieval import KnowledgeBase
    from retrieval.store import MIGRATIONS as KB_MIGRATIONS

    home = tmp_path / "home"
    kb = KnowledgeBase(home / "kb" / "default", embedder=tiny_embedder)
    kb.put("lockers", "Parcel lockers", "Collect a parcel from any locker within 7 days.", ["Can I use a parcel locker?"])
    before = [(h.entry_id, round(h.score, 6)) for h in kb.search("parcel locker collect")]
    kb.close()
    log = ConversationLog(home / "conversations.sqlite")
    conversation = log.start("web")
    log.add_message(conversation, "customer", "Where is my parcel?")
    log.close()
    legacy = sqlite3.connect(home / "apikeys.sqlite")
    legacy.execute("CREATE TABLE api_keys(name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, per_minute INTEGER,"
                   " created_at TEXT NOT NULL, last_used TEXT, revoked_at TEXT)")
    legacy.execute("INSERT INTO api_keys VALUES ('crm', 'abc123', NULL, '2026-11-01T09:00:00+00:00', NULL, NULL)")
    legacy.commit()
    legacy.close()
    (home / "versions" / "tiny").mkdir(parents=True)  # an older home's registry: a card and the pointer in files
    (home / "versions" / "tiny" / "card.json").write_text(json.dumps({"version": "tiny", "kind": "lm", "created": "2026-11-01"}))
    (home / "serving.json").write_text(json.dumps({"lm": "tiny", "history": [{"changed": "lm", "at": "2026-11-01"}]}))
    url = postgres_cluster.new_database()
    assert main(["db", "copy", "--to", url, "--home", str(home), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tables"]["conversations"]["rows"] == 1 and report["tables"]["messages"]["rows"] == 1
    assert report["tables"]["api_keys"]["rows"] == 1  # kept by an older version in apikeys.sqlite: moved, then copied
    assert report["knowledge_bases"]["default"]["units"]["rows"] == 2  # the variant and the answer's passage
    copied = KnowledgeBase(tmp_path / "replica" / "default", embedder=tiny_embedder, database=url)
    assert [(h.entry_id, round(h.score, 6)) for h in copied.search("parcel locker collect")] == before  # no re-embedding
    copied.close()
    versions = registry(load_config(tmp_path / "replica", [f"storage.database_url={url}"], env={}))
    assert versions.serving() == {"lm": "tiny", "history": [{"changed": "lm", "at": "2026-11-01"}]}
    assert [c.version for c in versions.cards()] == ["tiny"]
    assert main(["db", "upgrade", "--home", str(home), "--set", f"storage.database_url={url}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "database": url, "from": head(MIGRATIONS), "to": head(MIGRATIONS),
        "knowledge_bases": {"default": {"from": head(KB_MIGRATIONS), "to": head(KB_MIGRATIONS)}}}
    assert main(["db", "copy", "--to", url, "--home", str(home)]) == 1  # a second copy would duplicate: refused
    assert "already holds knowledge base 'default'; copy only into a new database" in capsys.readouterr().err


def test_an_unreachable_database_stops_a_command_with_one_line(tmp_path, capsys):
    url = "postgresql://bot:s3cret@127.0.0.1:1/support"  # nothing listens on port 1
    assert main(["db", "upgrade", "--home", str(tmp_path), "--set", f"storage.database_url={url}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("supportbot: error: database postgresql://bot:***@127.0.0.1:1/support: cannot connect")
    assert len(err.strip().splitlines()) == 1 and "s3cret" not in err


def test_the_url_comes_from_the_environment_and_its_password_is_never_printed(tmp_path):
    url = "postgresql://bot:s3cret@db.internal:5432/support"
    config = load_config(tmp_path, env={"SUPPORTBOT_STORAGE_DATABASE_URL": url})
    assert config.log_database == url
    assert as_dict(config)["storage"]["database_url"] == "postgresql://bot:***@db.internal:5432/support"
    assert load_config(tmp_path, env={}).log_database == tmp_path / "conversations.sqlite"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, tiny_embedder_path, tiny_lm_path, postgres_cluster):
    """Two app services, each with its own home, on one PostgreSQL database (made once for the module)."""
    from ui.service import SupportService

    url = postgres_cluster.new_database()
    settings = [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.backend=transformers",
                "model.max_new_tokens=12", f"storage.database_url={url}"]
    services = [SupportService(load_config(tmp_path_factory.mktemp(name), settings, env={})) for name in ("a", "b")]
    yield services
    for service in services:
        service.bot.log.close()


def test_a_hand_off_taken_by_one_replica_is_answered_from_the_other(replicas):
    customer_side, agent_side = replicas
    *_, last = customer_side.chat("I want to talk to a human")
    conversation = last["reply"]["conversation_id"]
    agent = agent_side.login("agent", "agent")["token"]
    (item,) = [i for i in agent_side.queue(agent)["items"] if i["conversation_id"] == conversation]
    assert item["last_customer"] == "I want to talk to a human"
    agent_side.send(agent, conversation, "rejected", "Hi, Sam here: how can I help?", draft="")
    seen = customer_side.history(conversation)[-1]
    assert (seen["role"], seen["text"]) == ("agent", "Hi, Sam here: how can I help?")
    assert customer_side.status(conversation) == agent_side.status(conversation)


def test_an_entry_added_through_one_replica_is_searched_by_the_other(replicas):
    first, second = replicas
    first.bot.kb.put("lockers", "Parcel lockers", "Collect a parcel from any locker within 7 days.",
                     ["Can I pick up my parcel from a locker?"])
    assert second.bot.kb.search("pick up parcel from a locker")[0].entry_id == "lockers"
    assert second.bot.kb.dense_index().size == first.bot.kb.dense_index().size  # rebuilt from the stored vectors
    second.bot.kb.remove("lockers")
    assert all(hit.entry_id != "lockers" for hit in first.bot.kb.search("pick up parcel from a locker"))


def test_one_job_runs_at_a_time_across_replicas_and_a_killed_one_frees_the_lock(replicas, capsys):
    import subprocess
    import sys

    from ui.jobs import JobError, exclusive_job, running_elsewhere

    first, second = replicas
    url = second.config.storage.database_url
    with exclusive_job(first.bot.log.db, "supportbot learn"):
        with pytest.raises(JobError, match="a job is already running [(]supportbot learn on .*[)]"):
            second.start_learning()
        assert main(["kb", "sync", "--all", "--home", str(second.config.home), "--set", f"storage.database_url={url}"]) == 1
        assert "a job is already running (supportbot learn on" in capsys.readouterr().err
    assert running_elsewhere(second.bot.log.db) is None
    holder = subprocess.Popen(  # a job process that dies holding the lock
        [sys.executable, "-c", "import sys, time\nfrom chatbot.log import open_database\nfrom ui.jobs import exclusive_job\n"
         f"with exclusive_job(open_database({url!r}), 'supportbot train'):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert running_elsewhere(first.bot.log.db).startswith("supportbot train on")
    holder.kill()
    holder.wait()
    deadline = time.monotonic() + 10
    while running_elsewhere(first.bot.log.db) is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # the server notices the closed connection
    assert running_elsewhere(first.bot.log.db) is None


def test_an_account_added_on_one_machine_signs_in_on_every_replica(tmp_path, postgres_cluster, monkeypatch):
    import io

    from ui.auth import Accounts, Sessions

    url = postgres_cluster.new_database()
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["user", "add", "kim", "--role", "agent", "--home", str(tmp_path / "a"), "--set", f"storage.database_url={url}"]) == 0
    replica = ConversationLog(url)  # another machine's app: its own home, no config entry for kim
    assert Sessions(Accounts([], replica.db), 30, replica.db).login("kim", "correct horse")[1].role == "agent"
    replica.close()


def test_a_staff_sign_in_on_one_replica_holds_on_the_other_until_signed_out(replicas):
    first, second = replicas
    token = first.login("ops", "ops")["token"]
    assert second.session(token) == {"user": "ops", "role": "ops"}
    second.logout(token)
    with pytest.raises(PermissionError, match="please log in"):
        first.session(token)


def test_replicas_counting_one_caller_at_once_let_exactly_the_limit_through(postgres_cluster):
    from concurrent.futures import ThreadPoolExecutor

    from chatbot.config import RateLimits
    from ui.ratelimit import Caller, RateLimited, RateLimiter

    url = postgres_cluster.new_database()
    logs = [ConversationLog(url), ConversationLog(url)]  # each its own pool, as two processes have
    limits = RateLimits(chat_per_session=100, chat_per_address=5)
    limiters = [RateLimiter(limits, log.db) for log in logs]

    def take(i: int) -> bool:
        try:
            limiters[i % 2].take("chat", Caller("203.0.113.9", f"s{i}"))
            return True
        except RateLimited:
            return False

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(take, range(16))) == 5
    for log in logs:
        log.close()


def test_a_daily_job_is_claimed_by_one_replica_only(replicas):
    from ui.daily import claim

    first, second = replicas
    assert claim(first.bot.log.db, "daily-learning:2026-12-07")
    assert not claim(second.bot.log.db, "daily-learning:2026-12-07") and not claim(first.bot.log.db, "daily-learning:2026-12-07")
    assert claim(second.bot.log.db, "daily-learning:2026-12-08")  # the next day is free again


def test_an_api_key_made_on_one_replica_is_accepted_and_revoked_on_all(replicas):
    from ui.apikeys import ApiKeyError, ApiKeys

    first, second = (ApiKeys(service.bot.log.db) for service in replicas)
    key = first.add("helpdesk", limit=50)
    assert second.check(key).limit == 50
    second.revoke("helpdesk")
    with pytest.raises(ApiKeyError, match="was revoked"):
        first.check(key)


def test_a_version_promoted_through_one_replica_is_served_by_the_other(tmp_path, tiny_embedder_path, tiny_lm_path, capsys,
                                                                     postgres_cluster, registry):
    from chatbot import SupportBot

    shared = [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.backend=transformers",
              "model.max_new_tokens=4", f"storage.models_dir={tmp_path / 'models'}", "answer.handoff_confidence=0.0",
              "answer.mode=generate", "answer.grounding_min=0.0", f"storage.database_url={postgres_cluster.new_database()}"]
    homes = [tmp_path / "a", tmp_path / "b"]
    flags = [f"--set={s}" for s in shared]
    faq = tmp_path / "faq.csv"
    faq.write_text("id,question,answer\ngift,Do gift cards expire?,Gift cards never expire.\n")
    for home in homes:
        assert main(["kb", "add", str(faq), "--home", str(home), "-q", *flags]) == 0
    other = SupportBot(load_config(homes[1], shared, env={}))  # running before the version exists
    assert main(["train", "sft", "--max-steps", "1", "--home", str(homes[0]), "-q", *flags]) == 0
    assert main(["models", "promote", "latest", "--force", "--home", str(homes[0]), "-q", *flags,
                 "--set=gate.questions=2", "--set=gate.max_new_tokens=4"]) == 0
    capsys.readouterr()
    promoted = registry(load_config(homes[1], shared, env={})).serving_version("lm")
    assert promoted.startswith("sft-") and not (homes[0] / "versions").exists()
    assert (tmp_path / "models" / "versions" / promoted / "adapter_config.json").exists()
    assert other.ask("Do gift cards expire?").model == promoted
    other.log.close()


def test_a_lost_database_fails_requests_clearly_and_the_app_recovers_when_it_returns(tmp_path, tiny_embedder_path, postgres_cluster):
    from fastapi.testclient import TestClient
    from gradio_door import GradioError, Page

    from ui.app import build_app
    from ui.service import UNAVAILABLE, SupportService

    url = postgres_cluster.new_database()
    config = load_config(tmp_path / "home", [f"retrieval.embedder={tiny_embedder_path}", f"storage.database_url={url}"], env={})
    service = SupportService(config)  # an empty knowledge base: every question is handed off, no model loads

    def ask(client, text: str):
        return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]})

    with TestClient(build_app(config, service)) as client:
        before = ask(client, "Is my order on its way?").json()["conversation_id"]
        postgres_cluster.stop()
        try:
            down = ask(client, "Hello, anyone there?")
            assert down.status_code == 503 and down.json()["error"]["message"] == UNAVAILABLE
            with pytest.raises(GradioError, match="briefly unavailable"):
                Page(client).call("chat", "Hello, anyone there?", "")
        finally:
            postgres_cluster.start()
        after = ask(client, "Is my order on its way now?").json()["conversation_id"]  # the pool reconnects
    log = service.bot.log
    assert [m.text for m in log.history(before)][0] == "Is my order on its way?"
    assert [m.text for m in log.history(after)][0] == "Is my order on its way now?"
    assert not [c for c in log.conversations() if c["id"] not in (before, after)]  # what failed left nothing half-written
    log.close()


def test_replicas_generate_on_one_inference_server(tmp_path, tiny_embedder_path, tiny_lm_path, postgres_cluster):
    """Generation on a GPU server (vLLM, TGI: OpenAI-compatible), here a stand-in serving the tiny model."""
    from helpers import start_inference_server

    from chatbot import SupportBot
    from chatbot.backends import TransformersBackend

    server = start_inference_server(TransformersBackend.from_folder(tiny_lm_path, "tiny"))
    settings = [f"retrieval.embedder={tiny_embedder_path}", "model.backend=openai", "model.openai_model=tiny",
                f"model.openai_url=http://127.0.0.1:{server.server_port}/v1", "model.max_new_tokens=6",
                "answer.mode=generate", "answer.handoff_confidence=0.0", "answer.grounding_min=0.0",
                f"storage.database_url={postgres_cluster.new_database()}"]
    faq = tmp_path / "faq.csv"
    faq.write_text("id,question,answer\ngift,Do gift cards expire?,Gift cards never expire.\n")
    try:
        bots = []
        for name in ("a", "b"):
            assert main(["kb", "add", str(faq), "--home", str(tmp_path / name), "-q", *[f"--set={s}" for s in settings]]) == 0
            bots.append(SupportBot(load_config(tmp_path / name, settings, env={})))
        replies = [bot.ask("Do gift cards expire?", channel="web") for bot in bots]
        assert [(r.model, r.mode) for r in replies] == [("openai:tiny", "generate")] * 2 and server.requests == 2
        assert {c["id"] for c in bots[0].log.conversations()} >= {r.conversation_id for r in replies}  # one log
    finally:
        server.shutdown()
        for bot in bots:
            bot.log.close()
