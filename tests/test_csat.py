"""Customer satisfaction (CSAT): a closed conversation (by an agent, or idle for serve.idle_close_minutes) takes one
1-5 rating with an optional comment, on the chat page and through the widget; analytics shows it per day and by
outcome next to the thumbs-up rate."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from chatbot.analytics import analytics
from chatbot.review import close_idle

UTC = timezone.utc


@pytest.fixture
def service(home_config):
    from ui.service import SupportService

    return SupportService(home_config)


def conversation(log, handed_off: bool = False, channel: str = "web") -> str:
    conversation_id = log.start(channel)
    log.add_message(conversation_id, "customer", "Do gift cards expire?")
    log.add_message(conversation_id, "bot", "A person will reply." if handed_off else "Never. [1]", handed_off=int(handed_off))
    if handed_off:
        log.set_status(conversation_id, "handed_off")
    return conversation_id


def test_a_closed_conversation_takes_one_rating_from_1_to_5(service):
    from ui.service import ServiceError

    chat = conversation(service.bot.log)
    assert service.state(chat) == {"status": "open", "closed": False, "rated": False, "csat": None, "away": "", "email_left": False}
    with pytest.raises(ServiceError, match="still open: rate it once it is closed"):
        service.rate_conversation(chat, 5)
    service.close(service.login("agent", "agent")["token"], chat)
    assert service.state(chat)["closed"] and not service.state(chat)["rated"]  # the page asks now

    service.rate_conversation(chat, 4, "Quick, thanks! Write to kim@example.com")
    assert service.state(chat)["csat"] == {"score": 4, "comment": "Quick, thanks! Write to [EMAIL]"}  # redacted
    service.rate_conversation(chat, 2.0)  # a second one replaces the first (a JSON number is fine)
    assert service.state(chat)["rated"] and service.state(chat)["csat"] == {"score": 2, "comment": ""}
    assert service.bot.log.csat_ratings()[-1]["score"] == 2 and len(service.bot.log.csat_ratings()) == 1
    for bad in (0, 6, 3.5, True, "5"):
        with pytest.raises(ValueError, match="expected a whole number from 1 to 5") as refused:
            service.rate_conversation(chat, bad)
        assert "\n" not in str(refused.value)
    with pytest.raises(ServiceError, match="no conversation"):
        service.rate_conversation("f" * 32, 5)


def test_idle_conversations_close_on_an_injected_clock(service):
    log = service.bot.log
    chat, waiting, api = conversation(log), conversation(log, handed_off=True), conversation(log, channel="api")
    now = datetime.now(UTC)
    assert close_idle(log, 0, now + timedelta(days=1)) == []  # 0 = never
    assert close_idle(log, 30, now + timedelta(minutes=29)) == []
    service.config.serve.idle_close_minutes = 30
    service.bot.clock = lambda: now + timedelta(minutes=29)
    assert service.status(chat) == "open"
    service.bot.clock = lambda: now + timedelta(minutes=31)
    assert service.status(chat) == "resolved" and service.state(chat)["closed"]  # closed lazily, as the page asks
    assert service.status(waiting) == "handed_off" and service.status(api) == "open"  # a person awaited; not a chat page
    again = conversation(log)
    assert service.close_idle() == [again]  # the background round closes the rest
    service.rate_conversation(again, 5)
    assert service.state(again)["rated"]


def test_the_app_closes_idle_conversations_in_the_background(service):
    import threading
    import time

    from ui.daily import start_idle_closing

    assert start_idle_closing(service) is None  # serve.idle_close_minutes = 0: no thread
    chat = conversation(service.bot.log)
    service.config.serve.idle_close_minutes = 30
    service.bot.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    stop = threading.Event()
    thread = start_idle_closing(service, every=0.05, stop=stop)
    try:
        deadline = time.monotonic() + 10
        while service.bot.log.conversation(chat)["status"] == "open" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.bot.log.conversation(chat)["status"] == "resolved"
    finally:
        stop.set()
        thread.join(5)


def test_analytics_shows_csat_per_day_and_by_outcome_next_to_thumbs(service):
    from ui.staff import _analytics_summary

    log = service.bot.log
    today, yesterday = date.today().isoformat(), (date.today() - timedelta(days=1)).isoformat()
    for handed_off, score, day in ((False, 5, today), (False, 4, yesterday), (True, 2, today)):
        chat = conversation(log, handed_off)
        log.set_status(chat, "resolved")
        log.set_csat(chat, score, at=f"{day}T12:00:00.000+00:00")
    log.add_feedback(log.history(chat)[-1].id, True)
    eval_chat = conversation(log, channel="eval")  # evaluation runs never count
    log.set_csat(eval_chat, 1)
    report = analytics(log)
    assert report.csat_per_day == [{"day": yesterday, "average": 4.0, "count": 1}, {"day": today, "average": 3.5, "count": 2}]
    assert report.csat_by_outcome == {"bot": {"average": 4.5, "count": 2}, "handed_off": {"average": 2.0, "count": 1}}
    assert (report.csat_average, report.csat_count) == (3.67, 3)
    shown = service.analytics(service.login("ops", "ops")["token"])
    summary = _analytics_summary(shown)
    assert "100% thumbs up" in summary
    assert "**CSAT**: 3.7 / 5 from 3 rated conversations (answered by the bot 4.5 (2); handed off 2.0 (1))" in summary


def test_the_chat_page_asks_how_we_did_once(service):
    import gradio as gr

    from ui.customer import CSAT_THANKS, CustomerPage

    with gr.Blocks() as blocks:
        page = CustomerPage(service)
        page.build(blocks, service.welcome(), "")
    chat = conversation(service.bot.log)
    assert not page._view(chat)[page.csat].visible  # open: nothing asked
    service.bot.log.set_status(chat, "resolved")
    assert page._view(chat)[page.csat].visible
    shown = page._rate_with(5)(chat, "Lovely")
    assert not shown[page.csat].visible and shown[page.notice] == CSAT_THANKS
    assert service.state(chat)["csat"] == {"score": 5, "comment": "Lovely"}
    assert not page.new_conversation()[page.csat].visible


@pytest.fixture
def client(service):
    from fastapi.testclient import TestClient

    from ui.app import build_app

    with TestClient(build_app(service.config, service)) as client:
        yield client


def test_the_widget_rates_a_closed_conversation(client, service):
    chat = conversation(service.bot.log)
    origin = {"Origin": "http://testserver"}  # the bot's own origin
    refused = client.post("/api/widget/csat", json={"conversation_id": chat, "score": 5}, headers=origin)
    assert refused.status_code == 400 and "still open" in refused.json()["error"]
    service.bot.log.set_status(chat, "resolved")
    shown = client.get(f"/api/widget/conversation?conversation_id={chat}", headers=origin).json()
    assert shown["closed"] and not shown["rated"]
    rated = client.post("/api/widget/csat", json={"conversation_id": chat, "score": 3, "comment": "ok"}, headers=origin)
    assert rated.status_code == 200 and rated.json()["rated"] and rated.json()["csat"] == {"score": 3, "comment": "ok"}
    for body in ({"conversation_id": chat, "score": 6}, {"conversation_id": chat, "score": "5"}, {"conversation_id": chat}):
        assert client.post("/api/widget/csat", json=body, headers=origin).status_code == 400
    other = client.post("/api/widget/csat", json={"conversation_id": chat, "score": 1}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and service.state(chat)["csat"]["score"] == 3
    script = client.get("/widget.js")
    assert len(script.content) < 30_000 and b'"/csat"' in script.content and b'"/email"' in script.content
