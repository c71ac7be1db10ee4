"""End to end in a real browser: the customer's page at /, one page per flow, on desktop and on a phone.
Screenshots go under test-artifacts/ (and the desktop chat to docs/images/ for the README)."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from browser import ARTIFACTS, app, browser, pages_closed  # noqa: F401 (fixtures)
from conftest import REPO

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1200, "height": 860}
PHONE = {"width": 390, "height": 844}
TAP = 44  # px: the smallest comfortable tap target
AGENT_REPLY = "Your parcel left our warehouse this morning; you'll get the tracking link by email."


@pytest.fixture(scope="module", autouse=True)
def warm(app):
    """The first answer loads the embedder and the model (seconds, more on a busy machine): paid here, once, so that
    each flow's short waits measure the page."""
    body = json.dumps({"messages": [{"role": "user", "content": "Do gift cards expire?"}]}).encode()
    request = urllib.request.Request(app[0] + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=300).read()


def open_chat(browser, url: str, viewport: dict = DESKTOP, **options):
    page = browser.new_context(viewport=viewport, **options).new_page()
    page.goto(url + "/")
    page.locator("#customer-chat").wait_for(timeout=30_000)
    return page


def ask(page, question: str, expected: str):
    """Send a question; returns the bot bubble that answers it (it must contain `expected`)."""
    page.fill("#customer-message textarea", question)
    page.click("#customer-send")
    page.locator("#customer-chat .message.user", has_text=question).wait_for(timeout=5_000)  # shown at once
    answer = page.locator("#customer-chat .message.bot").last
    page.wait_for_function("([text]) => { const bots = document.querySelectorAll('#customer-chat .message.bot');"
                           " return bots.length && bots[bots.length - 1].innerText.includes(text); }", arg=[expected], timeout=60_000)
    page.locator("#rating-row").wait_for(timeout=30_000)  # the logged turn has replaced the streamed one
    return answer


def bot_thumb(page, label: str, reply: int = -1):
    """The thumb button (Like, Dislike, Liked or Disliked) of a bot reply (by default the latest)."""
    return page.locator("#customer-chat .message-buttons").nth(reply).locator(f"button[aria-label='{label}']")


def latest_conversation(config, status: str | None = None) -> str:
    from chatbot import ConversationLog

    return ConversationLog(config.log_file).conversations(status)[-1]["id"]


def latest_bot_reply(config) -> int:
    from chatbot import ConversationLog

    return [m.id for m in ConversationLog(config.log_file).history(latest_conversation(config)) if m.role == "bot"][-1]


def feedback_for(config, message_id: int) -> list[dict]:
    from chatbot import ConversationLog

    return [f for f in ConversationLog(config.log_file).feedback() if f["message_id"] == message_id]


def test_the_customer_page_is_a_branded_chat_whose_suggestions_ask(app, browser):
    url, config = app
    config.serve.suggested_questions = ["Do you ship to Canada?"]  # read at each page load
    try:
        page = open_chat(browser, url)
        page.get_by_text(config.answer.company).first.wait_for()
        page.get_by_text("virtual assistant").wait_for()  # the greeting
        assert page.get_by_role("tab").count() == 0
        for chrome in ("Use via API", "Staff sign-in", "Built with Gradio"):
            assert page.get_by_text(chrome).count() == 0
        suggestion = page.locator("#customer-chat .example", has_text="Do you ship to Canada?")
        suggestion.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "customer-01-welcome.png"))
        suggestion.click()
        page.locator("#customer-chat .message.bot", has_text="Canada Post").wait_for(timeout=60_000)
    finally:
        config.serve.suggested_questions = []


def test_a_second_question_on_a_new_topic_gets_its_own_answer(app, browser):
    page = open_chat(browser, app[0])
    page.fill("#customer-message textarea", "How long does a refund take?")
    page.click("#customer-send")
    page.locator("#customer-chat .message.user", has_text="refund").wait_for(timeout=5_000)
    assert "processing" not in page.inner_text("body")  # no Gradio timer over the page
    page.locator("#customer-chat .message.bot", has_text="refund").last.wait_for(timeout=60_000)
    answer = ask(page, "Do you ship to Canada?", "Canada Post")
    assert "refund" not in answer.inner_text().lower()
    answer.locator("a", has_text="Shipping to Canada").wait_for()  # the source, as a link
    page.screenshot(path=str(ARTIFACTS / "customer-02-topic-switch.png"))
    (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(ARTIFACTS / "customer-02-topic-switch.png", REPO / "docs" / "images" / "customer-chat.png")


def test_a_rating_and_its_comment_are_one_action_that_a_second_click_undoes(app, browser):
    url, config = app
    page = open_chat(browser, url)
    ask(page, "Do your gift cards ever expire?", "never expire")
    message_id = latest_bot_reply(config)

    bot_thumb(page, "Like").click()  # thumb first, then the comment for that reply
    page.get_by_text("Tell us more").wait_for(timeout=30_000)
    assert page.evaluate("document.activeElement === document.querySelector('#rating-comment textarea')")
    page.fill("#rating-comment textarea", "Clear and quick")
    page.click("#rating-send")
    page.get_by_text("Thanks for your feedback.").wait_for(timeout=30_000)
    assert [(f["rating"], f["comment"]) for f in feedback_for(config, message_id)] == [(1, "Clear and quick")]

    bot_thumb(page, "Liked").click()  # the same thumb again: no rating
    page.get_by_text("Rating removed.").wait_for(timeout=30_000)
    assert feedback_for(config, message_id) == []

    page.fill("#rating-comment textarea", "I wanted the balance check too")  # the comment first, then the thumb
    bot_thumb(page, "Dislike").click()
    page.get_by_text("Thanks for your feedback.").wait_for(timeout=30_000)
    assert [(f["rating"], f["comment"]) for f in feedback_for(config, message_id)] == [(-1, "I wanted the balance check too")]

    ask(page, "Do you ship to Canada?", "Canada Post")
    bot_thumb(page, "Disliked", 0).wait_for(timeout=30_000)  # still shown once the chat has moved on
    page.reload()
    bot_thumb(page, "Disliked", 0).wait_for(timeout=30_000)  # the stored rating, shown after a reload
    assert bot_thumb(page, "Liked", 0).count() == 0 and bot_thumb(page, "Like").count() == 1
    page.screenshot(path=str(ARTIFACTS / "customer-03-rated.png"))


def test_talk_to_a_person_acknowledges_messages_shows_agents_live_and_can_be_left(app, browser):
    url, config = app
    page = open_chat(browser, url)
    page.click("#talk-to-person")
    page.get_by_text("Waiting for a person").wait_for(timeout=30_000)
    assert page.locator("#talk-to-person").count() == 0  # asked once: no second request to post
    ask(page, "Hello, are you there?", "an agent will reply here")  # acknowledged, not silence
    page.screenshot(path=str(ARTIFACTS / "customer-04-waiting.png"))

    from chatbot import ConversationLog

    history = ConversationLog(config.log_file).history(latest_conversation(config, "handed_off"))
    assert [m.reason for m in history if m.role == "bot"] == ["human", "waiting_for_agent"]  # one hand-off, one acknowledgement

    ConversationLog(config.log_file).add_agent_action(latest_conversation(config, "handed_off"), None, AGENT_REPLY, "rejected", "agent")
    agent = page.locator("#customer-chat .message.bot", has_text=AGENT_REPLY)
    agent.wait_for(timeout=30_000)  # live, by the page's poll
    assert "support agent" in agent.inner_text().lower() and "an agent will reply here" not in agent.inner_text()  # its own bubble
    page.screenshot(path=str(ARTIFACTS / "customer-05-agent-reply.png"))

    page.click("#leave-queue")
    page.locator("#talk-to-person").wait_for(timeout=30_000)
    assert page.get_by_text("Waiting for a person").count() == 0
    assert ConversationLog(config.log_file).conversation(latest_conversation(config))["status"] == "open"


def test_a_new_conversation_survives_a_reload(app, browser):
    page = open_chat(browser, app[0], color_scheme="dark")
    ask(page, "How long does delivery to Canada take?", "business days")
    assert not page.evaluate("document.body.classList.contains('dark')")  # the company's colours, not Gradio's dark mode
    page.reload()
    page.locator("#customer-chat .message.bot", has_text="business days").wait_for(timeout=30_000)
    page.click("#new-conversation")
    page.get_by_text("virtual assistant").wait_for(timeout=30_000)
    page.reload()
    page.get_by_text("virtual assistant").wait_for(timeout=30_000)
    page.locator("#customer-chat .example").first.wait_for(timeout=30_000)  # none configured: the most answered
    assert "business days" not in page.inner_text("#customer-chat")
    page.screenshot(path=str(ARTIFACTS / "customer-06-new-conversation.png"))


def in_view_and_large(page, targets: dict[str, str]) -> None:
    """Each target lies wholly inside the phone's screen (no scrolling to reach it) and is at least 44 px each way."""
    for name, selector in targets.items():
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], f"{name} is off screen: {box}"
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{name} is off screen: {box}"
        assert box["height"] >= TAP and box["width"] >= TAP, f"{name} is a {box['width']:.0f}x{box['height']:.0f} px target"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing runs off to the side


def test_on_a_phone_the_input_stays_in_view_and_every_tap_target_is_large(app, browser):
    page = open_chat(browser, app[0], PHONE, is_mobile=True, has_touch=True)
    page.locator("#customer-chat .example").first.wait_for(timeout=30_000)
    in_view_and_large(page, {"suggested question": "#customer-chat .example >> nth=0"})
    ask(page, "Do you ship to Canada?", "Canada Post")
    in_view_and_large(page, {
        "input": "#customer-message textarea", "send": "#customer-send", "talk to a person": "#talk-to-person",
        "new conversation": "#new-conversation", "comment": "#rating-comment textarea", "send comment": "#rating-send",
        "like": "#customer-chat .message-buttons >> nth=-1 >> button[aria-label='Like']",
        "dislike": "#customer-chat .message-buttons >> nth=-1 >> button[aria-label='Dislike']"})
    page.screenshot(path=str(ARTIFACTS / "customer-07-phone.png"))
    page.click("#talk-to-person")
    page.locator("#leave-queue").wait_for(timeout=30_000)
    in_view_and_large(page, {"no longer need a person": "#leave-queue", "input": "#customer-message textarea", "send": "#customer-send"})
    page.screenshot(path=str(ARTIFACTS / "customer-08-phone-waiting.png"))


def test_a_closed_conversation_asks_how_we_did_once(app, browser):
    from chatbot import ConversationLog

    url, config = app
    page = open_chat(browser, url)
    page.click("#talk-to-person")
    page.get_by_text("Waiting for a person").wait_for(timeout=30_000)
    conversation = latest_conversation(config, "handed_off")
    ConversationLog(config.log_file).set_status(conversation, "resolved")  # as an agent's Close does
    page.locator("#csat-question").wait_for(timeout=30_000)  # by the page's poll
    page.fill("#csat-comment textarea", "Quick and kind.")
    page.click("#csat-4")
    page.get_by_text("Thanks for rating us").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "customer-07-csat.png"))
    assert ConversationLog(config.log_file).csat(conversation)["score"] == 4
    page.reload()
    page.locator("#customer-chat").wait_for(timeout=30_000)
    assert page.locator("#csat-question").is_hidden()  # asked once
