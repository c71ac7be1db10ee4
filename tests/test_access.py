"""Agent and ops functions refuse anonymous and wrong-role callers through every door: the Gradio API by
name (as `gradio_client` calls it), Gradio's plain HTTP API (as curl calls it), the staff page's own event
handlers at /staff (hidden from the API docs, not from clients) and the app's HTTP routes. Passwords are scrypt
hashes; sessions expire. The real app runs in process (Starlette's TestClient); no refusal here needs a
model, so none is loaded."""

from __future__ import annotations

import re
import time

import pytest
from gradio_door import GradioError, Page, rest_call

# Every staff function of the Gradio API, the role it needs and arguments after the token.
STAFF_API = {
    "queue": ("agent", []),
    "review": ("agent", ["x"]),
    "send": ("agent", ["x", "edited", "Hello", "draft", None]),
    "close": ("agent", ["x"]),
    "kb_upload": ("ops", ["faq.csv", "question,answer\nQ?,A.\n"]),
    "kb_entries": ("ops", [""]),
    "kb_remove": ("ops", ["gift-exp"]),
    "analytics": ("ops", []),
    "models": ("ops", []),
    "train": ("ops", ["sft", 1, 1]),
    "promote": ("ops", ["latest", True]),
    "rollback": ("ops", ["lm"]),
    "job_list": ("ops", []),
    "gate_report": ("ops", ["latest"]),
    "suggestions": ("ops", ["", "open"]),
    "decide": ("ops", [1, "reject", None, None]),
    "learn": ("ops", [False]),
    "kb_sources": ("ops", []),
    "add_site": ("ops", ["http://127.0.0.1:9/help/", 0]),
    "sync": ("ops", [[]]),
    "webhook_deliveries": ("ops", []),
}
# Every handler of the staff page that takes the sign-in token (kept in the browser), and the role it needs
# (None: any caller; signing out ends only the session it is given). A name ending in _1, _2... is the same
# function run after another event.
STAFF_HANDLERS = {
    "restore": "agent", "refresh_queue": "agent", "refresh_queue_1": "agent", "refresh_queue_2": "agent",
    "open_conversation": "agent", "send_reply": "agent", "close_conversation": "agent",
    "show_entries": "ops", "show_entries_1": "ops", "show_entries_2": "ops", "show_entries_3": "ops", "show_entries_4": "ops",
    "add_files": "ops", "drop": "ops", "show_analytics": "ops", "list_models": "ops", "run_gate": "ops", "roll_back": "ops",
    "show_report": "ops", "start_job": "ops", "refresh_jobs": "ops", "end": None,
    "show_suggestions": "ops", "show_suggestions_1": "ops", "decide_suggestion": "ops", "start_learning": "ops",
    "show_sources": "ops", "add_site": "ops", "sync_sources": "ops", "follow_job": "ops",
    "show_deliveries": "ops", "show_snippet": "ops", "save_origins": "ops",
}
# Handlers that run by themselves on every open page (on load, on a timer): for callers without the role they
# stay silent, changing nothing on the page (restore also forgets a token that signs no one in).
SILENT = {"restore", "refresh_queue", "refresh_jobs", "follow_job"}
NOTHING = ("", None, {"__type__": "update"})  # a state's value never leaves the server: None
SAMPLE_INPUTS = {"textbox": "x", "checkbox": False, "number": 1, "state": "x"}  # a dropdown gets its first choice

ANONYMOUS = "please log in"
WRONG_ROLE = "this needs the ops role; you are logged in as agent"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from chatbot import load_config
    from ui.app import build_app

    with TestClient(build_app(load_config(tmp_path_factory.mktemp("access"), env={}))) as client:
        yield client


@pytest.fixture(scope="module")
def agent_token(client):
    return Page(client).call("login", "agent", "agent")["token"]


def test_every_staff_function_of_the_api_is_listed_here(client):
    endpoints = client.get("/gradio_api/info").json()["named_endpoints"]
    takes_token = {name.lstrip("/") for name, e in endpoints.items() if e["parameters"][:1]
                   and e["parameters"][0]["parameter_name"] == "token"}
    assert takes_token == set(STAFF_API)


@pytest.mark.parametrize("name", STAFF_API)
@pytest.mark.parametrize("door", ["gradio_client", "http"])
def test_staff_api_refuses_anonymous_and_wrong_role_callers(client, agent_token, name, door):
    role, args = STAFF_API[name]
    call = (lambda *data: Page(client).call(name, *data)) if door == "gradio_client" else (lambda *data: rest_call(client, name, *data))
    callers = {"": ANONYMOUS, "not-a-token": ANONYMOUS, **({agent_token: WRONG_ROLE} if role == "ops" else {})}
    for token, refusal in callers.items():
        with pytest.raises(GradioError, match=refusal):
            call(token, *args)


def page_inputs(page: Page, handler: str, upload: dict, token: str | None) -> list:
    """Plausible values for a handler's inputs, with the token the browser keeps (None: none kept)."""
    inputs = page.handlers[handler]["inputs"]
    return [token if page.component_types[i] == "browserstate"
            else [upload] if page.component_types[i] == "file"
            else page.component_props[i]["choices"][0][1] if page.component_types[i] == "dropdown"
            else SAMPLE_INPUTS.get(page.component_types[i]) for i in inputs]


def test_every_page_handler_that_takes_the_token_is_listed_here(client):
    page = Page(client, "/staff")
    token = page.handlers["sign_in"]["outputs"][0]
    assert {name for name, d in page.handlers.items() if token in d["inputs"]} == set(STAFF_HANDLERS)


@pytest.mark.parametrize("signed_in_as", [None, "agent"])
def test_page_handlers_refuse_anonymous_and_wrong_role_sessions(client, signed_in_as):
    page = Page(client, "/staff")
    token = page.call("sign_in", signed_in_as, signed_in_as)[0] if signed_in_as else None
    upload = page.upload("faq.csv", b"question,answer\nQ?,A.\n")
    for handler, role in STAFF_HANDLERS.items():
        if role in (None, signed_in_as):
            continue
        inputs = page_inputs(page, handler, upload, token)
        if re.sub(r"_\d+$", "", handler) in SILENT:
            outputs = page.call(handler, *inputs)
            assert all(o in NOTHING for o in (outputs if isinstance(outputs, list) else [outputs])), handler
            continue
        with pytest.raises(GradioError, match=WRONG_ROLE if signed_in_as else ANONYMOUS):
            page.call(handler, *inputs)


def test_a_reload_keeps_a_live_session_and_signing_out_ends_it(client):
    page = Page(client, "/staff")
    token = page.call("sign_in", "agent", "agent")[0]
    assert page.call("restore", token)[:2] == [token, "Signed in as **agent** (agent)."]
    page.call("end", token)
    assert page.call("restore", token) == ["", *[{"__type__": "update"}] * 3]  # quietly signed out
    with pytest.raises(GradioError, match=ANONYMOUS):
        Page(client).call("queue", token)


def test_the_http_routes_are_the_openai_ones_and_expose_no_staff_function(client):
    from fastapi.routing import APIRoute

    routes = {route.path for route in client.app.routes if isinstance(route, APIRoute)}
    widget = {"/widget.js", *(f"/api/widget/{name}" for name in ("{path:path}", "config", "conversation", "chat", "rate",
                                                                 "talk_to_person", "leave_queue", "csat", "email"))}  # the customer's
    assert routes == {"/v1/chat/completions", "/v1/models", *widget}
    assert client.get("/v1/models").json()["data"] == [{"id": "supportbot", "object": "model", "owned_by": "supportbot"}]
    for path in ("/v1/kb", "/v1/models/supportbot", "/v1/queue"):
        assert client.post(path, json={}).status_code in (404, 405)


def test_expired_sessions_are_refused_at_every_door(tmp_path):
    from fastapi.testclient import TestClient

    from chatbot import load_config
    from ui.app import build_app

    config = load_config(tmp_path, ["serve.session_minutes=0"], env={})  # sessions expire at once
    with TestClient(build_app(config)) as client:
        page = Page(client)
        token = page.call("login", "ops", "ops")["token"]
        with pytest.raises(GradioError, match=ANONYMOUS):
            page.call("queue", token)
        with pytest.raises(GradioError, match=ANONYMOUS):
            rest_call(client, "analytics", token)
        staff = Page(client, "/staff")
        token = staff.call("sign_in", "ops", "ops")[0]
        with pytest.raises(GradioError, match=ANONYMOUS):
            staff.call("show_analytics", token)
        assert staff.call("restore", token)[0] == ""  # a reload forgets the expired session


def test_sessions_expire_after_their_lifetime(tmp_path):
    from chatbot import ConversationLog
    from ui.auth import Accounts, AuthError, Sessions

    now = [1000.0]
    db = ConversationLog(tmp_path / "log.sqlite").db
    sessions = Sessions(Accounts([], db), minutes=30, db=db, clock=lambda: now[0])
    token, _ = sessions.login("ops", "ops")
    now[0] += 30 * 60
    assert sessions.require(token, "ops").user == "ops"
    now[0] += 1
    with pytest.raises(AuthError, match=ANONYMOUS):
        sessions.require(token, "ops")


def test_passwords_are_stored_as_salted_scrypt_hashes_and_an_added_account_replaces_the_demo_ones(tmp_path, monkeypatch):
    import io

    from chatbot import ConversationLog
    from ui.auth import _SCRYPT, Accounts, AuthError, Sessions, hash_password, verify_password
    from ui.cli import main

    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second  # salted
    assert verify_password("correct horse", first) and not verify_password("correct hors", first)
    assert 128 * _SCRYPT["r"] * _SCRYPT["n"] >= 16 * 2**20  # memory-hard: 16 MiB per guess
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["user", "add", "kim", "--role", "ops", "--home", str(tmp_path)]) == 0
    db = ConversationLog(tmp_path / "conversations.sqlite").db  # the home's database, as every replica's is
    (row,) = db.rows("SELECT * FROM staff_accounts")
    assert (row["name"], row["role"]) == ("kim", "ops") and verify_password("correct horse", row["password_hash"])
    assert "correct horse" not in str(row)
    sessions = Sessions(Accounts([], db), minutes=30, db=db)
    assert sessions.login("kim", "correct horse")[1].role == "ops"
    with pytest.raises(AuthError, match="wrong user name or password"):
        sessions.login("ops", "ops")  # the demo accounts exist only while there are no others


def test_an_unknown_user_name_costs_as_much_as_a_wrong_password(tmp_path):
    """So that the time of a refusal does not tell which user names exist."""
    from chatbot import ConversationLog
    from ui.auth import Accounts, AuthError, Sessions

    db = ConversationLog(tmp_path / "log.sqlite").db
    sessions = Sessions(Accounts([], db), minutes=30, db=db)

    def seconds(name: str) -> float:
        started = time.perf_counter()
        with pytest.raises(AuthError):
            sessions.login(name, "wrong")
        return time.perf_counter() - started

    seconds("nobody")  # the stand-in hash is made once
    unknown = min(seconds("nobody") for _ in range(3))
    wrong = min(seconds("ops") for _ in range(3))
    assert unknown > wrong / 4
