"""The web app's API through `gradio_client` for every role, refusals of the wrong role, and the
OpenAI-compatible endpoint, against a real server on a loopback port (tiny models)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from helpers import start_server, write

FAQ = """id,question,answer,title,category,url
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,https://help.example/ship-ca
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_embedder_path, tiny_lm_path):
    from chatbot import load_config
    from retrieval import KnowledgeBase

    root = tmp_path_factory.mktemp("web")
    config = load_config(root / "home", [
        f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=16",
        "model.temperature=1.0", "answer.handoff_confidence=0", "answer.grounding_min=0", "answer.mode=template",
    ], env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(root / "faq.csv", FAQ)])
    kb.close()
    url, stop = start_server(config)
    yield url, config
    stop()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0] + "/", verbose=False)


def login(client, user: str) -> str:
    return client.predict(user, user, api_name="/login")["token"]


def test_customer_chat_rate_and_talk_to_a_person(client):
    result = client.predict("Do gift cards expire?", "", api_name="/chat")
    reply = result["reply"]
    assert result["done"] and reply["answer"].endswith("[1]") and reply["sources"]
    history = client.predict(reply["conversation_id"], api_name="/history")
    assert [m["role"] for m in history] == ["customer", "bot"]
    assert client.predict(reply["message_id"], False, "not what I asked", api_name="/rate")["feedback_id"] > 0
    handed = client.predict(reply["conversation_id"], api_name="/talk_to_person")
    assert handed["conversation_id"] == reply["conversation_id"] and "support team" in handed["text"]


def test_chat_streams_partial_text(client, server):
    config = server[1]
    config.answer.mode = "generate"
    try:
        job = client.submit("How long does delivery to Canada take?", "", api_name="/chat")
        updates = list(job)
    finally:
        config.answer.mode = "template"
    assert len(updates) >= 3 and not updates[0]["done"] and updates[-1]["done"]


def test_agent_reviews_edits_and_closes(client):
    first = client.predict("Do gift cards expire?", "", api_name="/chat")["reply"]
    client.predict(first["conversation_id"], api_name="/talk_to_person")
    token = login(client, "agent")
    queue = client.predict(token, api_name="/queue")
    assert first["conversation_id"] in [i["conversation_id"] for i in queue["items"]]
    assert queue["counts"]["handed_off"] >= 1
    review = client.predict(token, first["conversation_id"], api_name="/review")
    suggestion = review["suggestion"]
    assert suggestion["text"] and review["status"] == "handed_off"
    client.predict(token, first["conversation_id"], "edited", "Gift cards never expire. Anything else?",
                   suggestion["text"], suggestion["draft_message_id"], api_name="/send")
    history = client.predict(first["conversation_id"], api_name="/history")
    assert history[-1] == {**history[-1], "role": "agent", "text": "Gift cards never expire. Anything else?"}
    assert first["conversation_id"] not in [i["conversation_id"] for i in client.predict(token, api_name="/queue")["items"]]
    assert client.predict(token, first["conversation_id"], api_name="/close") == {"status": "resolved"}


def test_ops_manage_the_kb_and_read_analytics(client, server):
    from chatbot.evaluate import save_eval

    save_eval(server[1].home, "answers", "tiny-llama:auto", {"answer_similarity": 0.5, "n": 3, "by_band": []})
    client.predict("Do gift cards expire?", "", api_name="/chat")
    token = login(client, "ops")
    added = client.predict(token, "more.csv", "id,question,answer\nplus-cost,What does Plus cost?,Plus costs $49 a year.\n", api_name="/kb_upload")
    assert added["added"] == 1
    assert [e["id"] for e in client.predict(token, "plus", api_name="/kb_entries")] == ["plus-cost"]
    assert client.predict(token, "plus-cost", api_name="/kb_remove") == {"removed": "plus-cost"}
    stats = client.predict(token, api_name="/analytics")
    assert {"per_day", "statuses", "shares", "thumbs_up_rate", "latency_ms_p50", "latency_ms_p95", "gaps"} <= set(stats)
    assert sum(stats["statuses"].values()) >= 1
    models = {m["version"]: m for m in client.predict(token, api_name="/models")}
    assert models["tiny-llama"]["serving"] and models["tiny-llama"]["kind"] == "lm"
    assert models["tiny-llama"]["metrics"]["eval"] == {"tiny-llama:auto": {"answer_similarity": 0.5, "n": 3}}


@pytest.mark.parametrize(
    "api, args, message",
    [
        ("/queue", ("",), "please log in"),
        ("/review", ("bogus-token", "x"), "please log in"),
        ("/kb_remove", ("AGENT", "gift-exp"), "needs the ops role"),
        ("/analytics", ("AGENT",), "needs the ops role"),
        ("/kb_upload", ("AGENT", "x.csv", "question,answer\nq,a\n"), "needs the ops role"),
        ("/kb_upload", ("OPS", "bad.csv", "questoin,answer\nq,a\n"), "did you mean 'question'"),
        ("/send", ("AGENT", "nope", "shrugged", "text", "draft", None), "action 'shrugged'"),
    ],
)
def test_wrong_role_and_bad_requests_are_refused(client, api, args, message):
    from gradio_client.exceptions import AppError

    tokens = {"AGENT": login(client, "agent"), "OPS": login(client, "ops")}
    args = tuple(tokens.get(a, a) if isinstance(a, str) else a for a in args)
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)


def test_login_refuses_a_wrong_password(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="wrong user name or password"):
        client.predict("agent", "nope", api_name="/login")


def post(url: str, body) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_openai_endpoint_plain_and_streaming(server):
    url = server[0] + "/v1/chat/completions"
    status, raw = post(url, {"messages": [{"role": "user", "content": "Do gift cards expire?"}]})
    body = json.loads(raw)
    assert status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].endswith("[1]") and body["sources"][0]["id"] == "gift-exp"
    status, raw = post(url, {"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "Canada delivery?"},
                                          {"role": "assistant", "content": "5-10 days."}, {"role": "user", "content": "Do gift cards expire?"}],
                             "stream": True, "max_tokens": 8, "temperature": 0.5})
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    assert status == 200 and raw.decode().rstrip().endswith("data: [DONE]")
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text.endswith("[1]") and events[-1]["choices"][0]["finish_reason"] == "stop" and events[-1]["sources"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "'messages' must be a non-empty list"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message must have role 'user'"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}, "'max_tokens'"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "'temperature'"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "'stream'"),
        ([1, 2], "JSON object"),
    ],
)
def test_openai_endpoint_refuses_bad_payloads(server, body, message):
    status, raw = post(server[0] + "/v1/chat/completions", body)
    assert status == 400 and message in json.loads(raw)["error"]["message"]


def test_production_mode_refuses_default_passwords(tmp_path):
    from chatbot import load_config
    from ui.service import ServiceError, SupportService

    config = load_config(tmp_path, ["serve.production=true"], env={})
    with pytest.raises(ServiceError, match="default password"):
        SupportService(config)
