"""The embeddable chat widget: `GET /widget.js` and its API under /api/widget/ (ui/widget_api.py) on the tiny models,
then one visitor's whole visit in a real browser, on a page of another site (marked slow)."""

from __future__ import annotations

import json

import pytest
from browser import ARTIFACTS, browser  # noqa: F401 (fixture)
from helpers import write

FAQ = """id,question,answer,title,category,url
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,https://help.example/gift-exp
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,https://help.example/ship-ca
"""
SHOP = "https://shop.example.com"
ELSEWHERE = "https://evil.example.net"


@pytest.fixture
def client(home_config):
    """The app on a two-entry knowledge base, answering by generation (the tiny LM streams a few tokens) whatever the
    tiny embedder's confidence, with one site allowed to embed the widget."""
    from fastapi.testclient import TestClient

    from retrieval import KnowledgeBase
    from ui.app import build_app

    kb = KnowledgeBase(home_config.kb_dir(), home_config.retrieval)
    kb.add([write(home_config.home / "faq.csv", FAQ)])
    kb.close()
    answer = home_config.answer
    answer.mode, answer.handoff_confidence, answer.grounding_min = "generate", 0.0, 0.0
    home_config.serve.allowed_origins = [SHOP + "/"]  # as people paste it, with a slash
    with TestClient(build_app(home_config)) as client:
        yield client


def events(response) -> list[dict]:
    """The server-sent events of a widget answer, as dicts."""
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(block[len("data: "):]) for block in response.text.split("\n\n") if block.startswith("data: ")]


def ask(client, message: str, conversation_id: str = "", origin: str = SHOP) -> list[dict]:
    response = client.post("/api/widget/chat", json={"message": message, "conversation_id": conversation_id, "visitor": "v1"},
                           headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    return events(response)


def test_a_message_gets_a_streamed_answer_that_the_logged_conversation_ends(client):
    streamed = ask(client, "Do gift cards expire?")
    final = streamed[-1]
    assert final["done"] and len(streamed) > 1 and all(not e["done"] and e["text"] for e in streamed[:-1])
    conversation = final["conversation"]
    assert [m["role"] for m in conversation["messages"]] == ["customer", "bot"]
    assert conversation["messages"][-1]["text"] == final["text"] and conversation["messages"][-1]["id"] == final["message_id"]
    assert conversation["status"] == "open" and conversation["conversation_id"]
    sources = conversation["messages"][-1]["sources"]  # the tiny embedder ranks at random: some entry, with its link
    assert sources and all(s["url"].startswith("https://help.example/") and s["title"] for s in sources)

    again = ask(client, "And vouchers?", conversation["conversation_id"])[-1]["conversation"]  # the same conversation
    assert again["conversation_id"] == conversation["conversation_id"] and len(again["messages"]) == 4
    kept = client.get("/api/widget/conversation", params={"conversation_id": conversation["conversation_id"]},
                      headers={"Origin": SHOP}).json()
    assert kept == again
    unknown = client.get("/api/widget/conversation", params={"conversation_id": "f" * 32}).json()
    assert unknown == {"conversation_id": "", "status": "", "messages": [], "closed": False, "rated": False, "csat": None,
                       "away": "", "email_left": False}


def test_the_welcome_is_the_company_greeting(client, home_config):
    config = client.get("/api/widget/config", headers={"Origin": SHOP})
    assert config.headers["access-control-allow-origin"] == SHOP
    body = config.json()
    assert body["company"] == home_config.answer.company and home_config.answer.company in body["greeting"]
    assert body["poll_seconds"] == home_config.serve.poll_seconds


def test_cors_answers_listed_origins_and_the_bots_own_only(client):
    allowed = client.options("/api/widget/chat", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "content-type"})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == SHOP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()

    refused = client.options("/api/widget/chat", headers={"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    post = client.post("/api/widget/chat", json={"message": "Do gift cards expire?"}, headers={"Origin": ELSEWHERE})
    assert post.status_code == 403 and "access-control-allow-origin" not in post.headers
    assert "allowed_origins" in post.json()["error"]
    for path in ("/api/widget/config", "/api/widget/conversation"):
        assert client.get(path, headers={"Origin": ELSEWHERE}).status_code == 403
    assert client.get("/api/widget/config", headers={"Origin": "null"}).status_code == 403  # a sandboxed or file: page

    own = client.get("/api/widget/config", headers={"Origin": "http://testserver"})  # the bot's own pages
    assert own.status_code == 200 and own.headers["access-control-allow-origin"] == "http://testserver"
    assert client.get("/api/widget/config").status_code == 200  # no Origin: not a browser's cross-site call


def test_a_refused_origin_posts_nothing(home_config):
    from fastapi.testclient import TestClient

    from chatbot import ConversationLog
    from ui.app import build_app

    with TestClient(build_app(home_config)) as client:  # no allowed origins: the bot's own pages only
        assert client.post("/api/widget/chat", json={"message": "Hi"}, headers={"Origin": SHOP}).status_code == 403
        assert client.post("/api/widget/talk_to_person", json={}, headers={"Origin": SHOP}).status_code == 403
    assert ConversationLog(home_config.log_file).conversations() == []


def test_a_rating_with_its_comment_and_a_person_asked_for_and_let_go(client, home_config):
    from chatbot import ConversationLog

    final = ask(client, "Do gift cards expire?")[-1]
    conversation_id, message_id = final["conversation"]["conversation_id"], final["message_id"]
    rate = {"conversation_id": conversation_id, "message_id": message_id, "thumbs_up": True, "comment": ""}
    assert client.post("/api/widget/rate", json=rate, headers={"Origin": SHOP}).status_code == 200
    assert client.post("/api/widget/rate", json={**rate, "comment": "Clear"}, headers={"Origin": SHOP}).status_code == 200
    log = ConversationLog(home_config.log_file)
    assert [(f["rating"], f["comment"]) for f in log.feedback() if f["message_id"] == message_id] == [(1, "Clear")]
    shown = client.get("/api/widget/conversation", params={"conversation_id": conversation_id}).json()["messages"][-1]
    assert (shown["rating"], shown["comment"]) == (1, "Clear")

    elsewhere = {**rate, "conversation_id": "0" * 32}  # another conversation's reply is not this visitor's to rate
    assert client.post("/api/widget/rate", json=elsewhere).status_code == 404
    assert client.post("/api/widget/rate", json={**rate, "thumbs_up": "yes"}).status_code == 400

    handed = client.post("/api/widget/talk_to_person", json={"conversation_id": conversation_id}, headers={"Origin": SHOP})
    assert handed.headers["access-control-allow-origin"] == SHOP
    assert handed.json()["status"] == "handed_off" and handed.json()["conversation_id"] == conversation_id
    log.add_agent_action(conversation_id, None, "A person here: they never expire.", "rejected", "agent")
    messages = client.get("/api/widget/conversation", params={"conversation_id": conversation_id}).json()["messages"]
    assert messages[-1]["role"] == "agent" and messages[-1]["text"] == "A person here: they never expire."
    left = client.post("/api/widget/leave_queue", json={"conversation_id": conversation_id}).json()
    assert left["status"] == "open"

    fresh = client.post("/api/widget/talk_to_person", json={}).json()  # from an empty chat: a new conversation
    assert fresh["status"] == "handed_off" and fresh["conversation_id"] != conversation_id


def test_the_chat_rate_limit_and_bad_requests(home_config):
    from fastapi.testclient import TestClient

    from ui.app import build_app

    home_config.limits.chat_per_session = 1
    with TestClient(build_app(home_config)) as client:
        ask(client, "Hi", origin="http://testserver")
        limited = client.post("/api/widget/chat", json={"message": "Hi again", "visitor": "v1"})
        assert limited.status_code == 429 and "try again" in limited.json()["error"] and limited.headers["retry-after"]
        for body in ({"message": ""}, {"message": 3}, {"message": "Hi", "conversation_id": "../x"}, ["Hi"]):
            assert client.post("/api/widget/chat", json=body).status_code == 400, body
        assert client.post("/api/widget/chat", content=b"{").status_code == 400
        assert client.post("/api/widget/chat", content=b" " * 70_000).status_code == 413


def test_widget_js_is_served_small_and_in_an_open_shadow_root(client):
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert len(response.content) < 30_000
    script = response.text
    assert 'attachShadow({mode: "open"})' in script and "/api/widget" in script
    assert "localStorage" in script and "innerHTML" not in script.replace("svg.innerHTML", "")  # text is never parsed as HTML


def test_bad_allowed_origins_stop_the_start(home_config):
    from fastapi import FastAPI

    from chatbot import ConfigError
    from ui.service import SupportService
    from ui.origins import parse_origins
    from ui.widget_api import add_widget_routes

    assert parse_origins([" https://Shop.example.com/ ", "http://localhost:8000", "*"]) == {
        "https://shop.example.com", "http://localhost:8000", "*"}
    home_config.serve.allowed_origins = ["shop.example.com"]
    with pytest.raises(ConfigError, match="allowed_origins"):
        add_widget_routes(FastAPI(), SupportService(home_config))


def test_the_snippet_for_ops(home_config):
    from ui.service import ServiceError, SupportService
    from ui.auth import AuthError

    service = SupportService(home_config)
    token = service.login("ops", "ops")["token"]
    assert service.widget_snippet(token, "https://bot.example.com/") == '<script src="https://bot.example.com/widget.js" defer></script>'
    assert service.widget_snippet(token) == f'<script src="http://127.0.0.1:{home_config.serve.port}/widget.js" defer></script>'
    with pytest.raises(ServiceError):
        service.widget_snippet(token, 'https://x"><script>')
    with pytest.raises(AuthError):
        service.widget_snippet(service.login("agent", "agent")["token"])


def test_ops_set_the_allowed_sites_and_the_widget_follows_at_once(home_config):
    import tomllib

    from fastapi.testclient import TestClient

    from ui.app import build_app
    from ui.service import ServiceError, SupportService

    service = SupportService(home_config)
    token = service.login("ops", "ops")["token"]
    with TestClient(build_app(home_config, service)) as client:
        assert client.get("/api/widget/config", headers={"Origin": SHOP}).status_code == 403
        assert service.set_allowed_origins(token, [f" {SHOP} ", ""]) == [SHOP]
        assert client.get("/api/widget/config", headers={"Origin": SHOP}).status_code == 200
    assert tomllib.loads(home_config.config_file.read_text())["serve"]["allowed_origins"] == [SHOP]
    with pytest.raises(ServiceError, match="serve.allowed_origins 'shop.example.com': expected an origin"):
        service.set_allowed_origins(token, ["shop.example.com"])


# --- in a real browser, on another site's pages -----------------------------------------------------------------------

AGENT_REPLY = "Hi, Sam from the returns team: your refund went out this morning."
# A shop's page whose CSS would wreck an unprotected widget: the shadow root keeps it out.
HOST_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>* {{ font-family: serif !important; color: #c00 !important; }} button {{ display: none !important; }}
div {{ border: 6px dashed orange; }}</style></head>
<body><h1>{title}</h1><p>Our products, our prices.</p><a href="other.html">Another page</a>
<script src="{bot}/widget.js" defer data-color="#0f766e"></script></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_kb_into, tiny_lm_path):
    """The bot (its own service, so that the test can answer as an agent), a shop's site on a second local origin that
    serve.allowed_origins lists, and a third origin that it does not, each serving two pages with the snippet."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from chatbot import load_config, save_settings
    from helpers import start_server
    from ui.service import SupportService

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    folders = {name: tmp_path_factory.mktemp(name) for name in ("shop", "elsewhere")}
    servers = {name: ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
               for name, folder in folders.items()}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    origins = {name: f"http://127.0.0.1:{server.server_address[1]}" for name, server in servers.items()}

    config = load_config(tmp_path_factory.mktemp("widget") / "home", env={})
    save_settings(config, {"model.path": str(tiny_lm_path), "serve.poll_seconds": 1, "serve.allowed_origins": [origins["shop"]]})
    demo_kb_into(config.kb_dir())
    service = SupportService(config)
    service.warm_up()  # the embedder and the model load here, not while the visitor waits
    bot, stop = start_server(config, service)
    for name, folder in folders.items():
        for page in ("index", "other"):
            write(folder / f"{page}.html", HOST_PAGE.format(title=f"{name} {page}", bot=bot))
    yield {"bot": bot, "service": service, **origins}
    stop()
    for server in servers.values():
        server.shutdown()


@pytest.mark.slow
def test_a_visitor_on_another_site_chats_rates_gets_a_person_and_keeps_the_conversation(site, browser):
    import re

    service = site["service"]
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.goto(site["shop"] + "/index.html")
    launcher = page.locator("supportbot-widget .launcher")
    assert "chat" in launcher.get_attribute("aria-label").lower()  # its accessible name
    page.get_by_role("button", name=re.compile("chat", re.I)).click()  # the only one while the panel is closed
    page.get_by_text("virtual assistant").wait_for(timeout=30_000)  # the company's greeting, from the bot
    assert page.evaluate("document.querySelector('supportbot-widget').shadowRoot.activeElement.tagName") == "TEXTAREA"
    assert launcher.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Escape")  # closes, and the focus goes back to the launcher
    page.locator("supportbot-widget .panel").wait_for(state="hidden")
    assert page.evaluate("document.querySelector('supportbot-widget').shadowRoot.activeElement.className") == "launcher"
    page.keyboard.press("Enter")
    page.get_by_role("textbox", name="Type your question").wait_for()
    page.screenshot(path=str(ARTIFACTS / "30-widget-01-open.png"))

    page.get_by_role("textbox", name="Type your question").fill("How long do refunds take?")
    page.keyboard.press("Enter")
    page.locator("supportbot-widget .msg.customer", has_text="How long do refunds take?").wait_for(timeout=5_000)
    answer = page.locator("supportbot-widget .msg.bot").last
    answer.locator(".sources a").first.wait_for(timeout=60_000)  # the logged turn, with its sources as links
    assert answer.locator(".sources a").first.get_attribute("href").startswith("https://help.tidewell.example/")
    page.screenshot(path=str(ARTIFACTS / "30-widget-02-answer.png"))

    answer.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_text("Tell us more below").wait_for(timeout=10_000)
    comment = page.get_by_role("textbox", name="Tell us more (optional)")
    comment.fill("Clear and quick")
    comment.press("Enter")
    page.get_by_text("Thanks for your feedback.").wait_for(timeout=10_000)
    conversation_id = page.evaluate("JSON.parse(localStorage.getItem(Object.keys(localStorage)"
                                    ".find(k => k.startsWith('supportbot-widget:')))).id")
    rated = [m for m in service.history(conversation_id) if m["role"] == "bot"][-1]
    assert (rated["rating"], rated["comment"]) == (1, "Clear and quick")

    page.get_by_role("button", name="Talk to a person").click()
    page.get_by_text("Waiting for a person").wait_for(timeout=10_000)
    assert service.status(conversation_id) == "handed_off"
    page.screenshot(path=str(ARTIFACTS / "30-widget-03-waiting.png"))
    token = service.login("agent", "agent")["token"]
    service.send(token, conversation_id, "rejected", AGENT_REPLY, "")
    page.locator("supportbot-widget .msg.agent", has_text=AGENT_REPLY).wait_for(timeout=10_000)  # live, by polling
    page.screenshot(path=str(ARTIFACTS / "30-widget-04-agent-reply.png"))

    service.close(token, conversation_id)  # the agent closes it: the widget asks how we did, once
    rating = page.get_by_role("group", name=re.compile("How did we do", re.I))
    rating.wait_for(timeout=10_000)
    rating.get_by_role("button", name="4", exact=True).click()
    page.get_by_text("Thanks for rating us!").wait_for(timeout=10_000)
    assert service.bot.log.csat(conversation_id)["score"] == 4 and rating.is_hidden()

    page.get_by_role("link", name="Another page").click()  # another page of the site, then a reload: the same chat
    page.wait_for_url("**/other.html")
    page.locator("supportbot-widget .msg.agent", has_text=AGENT_REPLY).wait_for(timeout=10_000)
    page.reload()
    page.locator("supportbot-widget .msg.agent", has_text=AGENT_REPLY).wait_for(timeout=10_000)
    page.locator("supportbot-widget .msg.customer", has_text="How long do refunds take?").wait_for()
    page.screenshot(path=str(ARTIFACTS / "30-widget-05-after-reload.png"))

    page.get_by_role("button", name="New conversation").click()
    page.get_by_text("virtual assistant").wait_for(timeout=10_000)
    assert page.locator("supportbot-widget .msg.agent").count() == 0

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    phone.goto(site["shop"] + "/index.html")
    phone.get_by_role("button", name=re.compile("chat", re.I)).click()
    phone.get_by_text("virtual assistant").wait_for(timeout=10_000)
    assert phone.locator("supportbot-widget .panel").bounding_box() == {"x": 0, "y": 0, "width": 390, "height": 844}
    phone.screenshot(path=str(ARTIFACTS / "30-widget-06-phone.png"))

    refused = browser.new_context().new_page()  # a site not in serve.allowed_origins: no answer, a short error
    refused.goto(site["elsewhere"] + "/index.html")
    refused.get_by_role("button", name=re.compile("chat", re.I)).click()
    refused.get_by_text("not available on this site").wait_for(timeout=10_000)
    assert refused.get_by_role("textbox", name="Type your question").is_disabled()
    refused.screenshot(path=str(ARTIFACTS / "30-widget-07-refused-origin.png"))
