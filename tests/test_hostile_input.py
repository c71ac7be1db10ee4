"""Hostile and broken input through every door, from the corpus in tests/hostile/cases.json.

Every case runs through the real product path on one home (real SQLite, real FAISS, tiny models): the
Gradio app and the OpenAI-compatible route in process (Starlette's TestClient), the command line through
`ui.cli.main`. A refused case must give one clear line naming the file, row or field, never a traceback
or a 500, and leave the state as it was: knowledge-base entries and index, the conversation log, model
versions and the serving pointer, saved evaluations, settings and jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO
from gradio_door import GradioError, Page
from helpers import write

from ui.cli import main

CORPUS = REPO / "tests" / "hostile"
CASES = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))["cases"]

FAQ = """id,question,answer,title
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping
"""


@dataclass
class App:
    client: object  # the TestClient
    home: Path
    flags: list[str]  # the settings, for the command line too
    page: Page  # a session on the Gradio API
    ops_page: Page  # a session on the staff pages, for sign-in and the upload handler
    values: dict = field(default_factory=dict)  # $AGENT, $OPS, $CONVERSATION, ...


@dataclass
class Outcome:
    error: str | None = None  # the one-line refusal
    reply: str | None = None  # the bot's reply, for messages that are handled
    status: int | None = None  # HTTP status, for the OpenAI route


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_embedder_path, tiny_lm_path):
    from fastapi.testclient import TestClient

    from chatbot import load_config
    from retrieval import KnowledgeBase
    from ui.app import build_app

    root = tmp_path_factory.mktemp("hostile")
    flags = [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=8",
             "answer.handoff_confidence=0", "answer.mode=template"]
    config = load_config(root / "home", flags, env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(root / "faq.csv", FAQ)])
    kb.close()
    with TestClient(build_app(config)) as client:
        page, ops_page = Page(client), Page(client, "/staff")  # the customer page, the staff pages
        agent, ops = (page.call("login", name, name)["token"] for name in ("agent", "ops"))
        page.call("models", ops)  # registers the model version and the serving pointer, part of the state
        reply = page.call("chat", "Do gift cards expire?", "")["reply"]
        customer = page.call("history", reply["conversation_id"])[0]["id"]
        yield App(client, config.home, flags, page, ops_page, {
            "$AGENT": agent, "$OPS": ops, "$CONVERSATION": reply["conversation_id"],
            "$BOT_MESSAGE": reply["message_id"], "$CUSTOMER_MESSAGE": customer})


# --- the corpus's values -----------------------------------------------------------------------------


def value(spec, app: App | None = None, folder: Path | None = None):
    """A case's value: generated ({"repeat": ...}), a corpus file's bytes ({"file": ...}), placeholders filled in."""
    if isinstance(spec, list):
        return [value(v, app, folder) for v in spec]
    if isinstance(spec, dict) and "file" in spec:
        return (CORPUS / "files" / spec["file"]).read_bytes()
    if isinstance(spec, dict) and "repeat" in spec:
        if not isinstance(spec["repeat"], str):
            return [spec["repeat"]] * spec["times"]
        return spec.get("before", "") + spec["repeat"] * spec["times"] + spec.get("after", "")
    if isinstance(spec, dict):
        return {k: value(v, app, folder) for k, v in spec.items()}
    if isinstance(spec, str) and app is not None and spec in app.values:
        return app.values[spec]
    if isinstance(spec, str) and folder is not None:
        return spec.replace("{dir}", str(folder))
    return spec


def as_bytes(spec) -> bytes:
    data = value(spec)
    return data if isinstance(data, bytes) else data.encode("utf-8")


def make_files(case: dict, folder: Path) -> None:
    for name, spec in case["input"].get("files", {}).items():
        write(folder / name, as_bytes(spec))
    for name in case["input"].get("folders", []):
        (folder / name).mkdir()
    for name, target in case["input"].get("links", {}).items():
        os.symlink(target, folder / name)


# --- the doors ---------------------------------------------------------------------------------------


def gradio(call) -> Outcome:
    """`call()` gives the reply (or any result, for a case that should have been refused)."""
    try:
        return Outcome(reply=call())
    except GradioError as err:
        return Outcome(error=err.args[0])


def chat(app: App, case: dict, folder: Path, capsys) -> Outcome:
    message, conversation_id = value(case["input"]["message"], app), value(case["input"]["conversation_id"], app)
    return gradio(lambda: app.page.call("chat", message, conversation_id)["reply"]["answer"])


def page(app: App, case: dict, folder: Path, capsys) -> Outcome:
    """The pages' own handlers that anyone can call (the customer page's, or the staff pages' sign-in); a reply
    is the last chat bubble they render."""
    handler, args = case["input"]["handler"], value(case["input"]["args"], app)
    on = app.page if handler in app.page.handlers else app.ops_page
    return gradio(lambda: on.call(handler, *args)[0][-1]["content"][0]["text"])


def gradio_api(app: App, case: dict, folder: Path, capsys) -> Outcome:
    return gradio(lambda: json.dumps(app.page.call(case["input"]["api"], *value(case["input"]["args"], app))))


def web_upload(app: App, case: dict, folder: Path, capsys) -> Outcome:
    """As a browser: each file through the page's file input, then the ops console's upload handler."""
    def upload():
        files = [app.ops_page.upload(name, as_bytes(spec)) for name, spec in case["input"]["files"].items()]
        if "server_path" in case["input"]:  # a path on the server, sent as if it were an upload
            files.append({"path": case["input"]["server_path"], "meta": {"_type": "gradio.FileData"}})
        return app.ops_page.call("add_files", app.values["$OPS"], files)  # the token the browser keeps
    return gradio(lambda: json.dumps(upload()))


def command_line(app: App, case: dict, folder: Path, capsys) -> Outcome:
    make_files(case, folder)
    args = [value(a, folder=folder) for a in case["input"]["args"]]
    status = main([*args, "--home", str(app.home), *[f"--set={flag}" for flag in app.flags], "-q"])
    out, err = capsys.readouterr()
    assert status == 1 and out == "", (status, out, err)
    assert err.startswith("supportbot: error: ") and err.count("\n") == 1, err
    return Outcome(error=err[len("supportbot: error: "):].rstrip("\n"))


def openai(app: App, case: dict, folder: Path, capsys) -> Outcome:
    body = as_bytes(case["input"]["raw"]) if "raw" in case["input"] else json.dumps(value(case["input"]["body"])).encode()
    response = app.client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    return Outcome(error=response.json().get("error", {}).get("message"), status=response.status_code)


DOORS = {"chat": chat, "page": page, "gradio_api": gradio_api, "api_upload": gradio_api, "web_upload": web_upload,
         "kb_add": command_line, "eval_retrieval": command_line, "eval_answers": command_line, "openai": openai}


# --- the state ---------------------------------------------------------------------------------------


def snapshot(home: Path) -> dict:
    """Everything a refused request must leave as it was."""
    kb_folder = home / "kb" / "default"
    with _read_only(kb_folder / "kb.sqlite") as kb:
        entries = kb.execute("SELECT id, content_hash FROM entries ORDER BY id").fetchall()
        state = {
            "kb_entries": len(entries),
            "kb_content": hashlib.sha256(repr(entries).encode()).hexdigest(),
            "kb_units": kb.execute("SELECT COUNT(*) FROM units").fetchone()[0],
            "kb_index_token": kb.execute("SELECT value FROM meta WHERE key = 'index_token'").fetchone(),
            "kb_index_files": sorted(p.name for p in kb_folder.glob("dense-*.faiss*")),
        }
    with _read_only(home / "conversations.sqlite") as log:
        for table in ("conversations", "messages", "feedback", "agent_actions", "model_versions", "serving_history"):
            state[table] = log.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        state["serving"] = log.execute("SELECT role, version FROM serving ORDER BY role").fetchall()
    for name in ("evals.json", "config.toml"):
        path = home / name
        state[name] = path.read_bytes() if path.exists() else None
    for folder in ("versions", "jobs"):
        state[folder] = sorted(p.name for p in (home / folder).glob("*")) if (home / folder).exists() else []
    return state


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def last_customer_text(home: Path) -> str:
    with _read_only(home / "conversations.sqlite") as log:
        return log.execute("SELECT text FROM messages WHERE role = 'customer' ORDER BY id DESC LIMIT 1").fetchone()[0]


# --- the test ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input_is_refused_clearly_and_changes_nothing(case, app, tmp_path, capsys):
    before = snapshot(app.home)
    outcome = DOORS[case["door"]](app, case, tmp_path, capsys)
    after = snapshot(app.home)
    if "reply" in case:  # handled, not refused: one exchange is logged, cleaned and cut
        assert outcome.error is None and case["reply"] in outcome.reply, outcome
        assert after == {**before, "conversations": before["conversations"] + 1, "messages": before["messages"] + 2}
        logged = last_customer_text(app.home)
        assert len(logged) <= 2000 and logged.isprintable() and logged == case.get("logged", logged)
        return
    expected = value(case["error"], folder=tmp_path)
    assert outcome.error is not None and expected in outcome.error, outcome
    assert "\n" not in outcome.error and "Traceback" not in outcome.error
    if DOORS[case["door"]] is not command_line:  # the app names files as they were sent, not its copies of them
        assert tempfile.gettempdir() + os.sep not in outcome.error
    assert outcome.status == case.get("status")
    assert after == before


def test_the_corpus_covers_every_door():
    counts = {door: sum(c["door"] == door for c in CASES) for door in DOORS}
    assert len(CASES) >= 60 and min(counts.values()) >= 5, counts


def test_a_question_to_an_empty_knowledge_base_hands_off_at_any_threshold(home_config):
    from chatbot import SupportBot

    home_config.answer.handoff_confidence = 0.0  # nothing found is below every threshold, even this one
    reply = SupportBot(home_config).ask("Do gift cards expire?")
    assert reply.handed_off and reply.reason == "low_confidence"
