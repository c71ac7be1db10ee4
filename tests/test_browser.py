"""End to end in a real browser (Debian's chromium driven by Playwright): a customer asks and rates an
answer down, an agent signs in on a second page, edits the suggested reply and sends it, and the
customer's page shows it. Screenshots are saved under test-artifacts/."""

from __future__ import annotations

import shutil

import pytest
from conftest import DATA, REPO
from helpers import start_server

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
EDITED = "Our gift cards never expire and have no fees. You can check the balance at tidewell.example/giftcard."


@pytest.fixture(scope="module")
def app(tmp_path_factory, real_embedder, tiny_lm_path):
    from chatbot import load_config
    from retrieval import KnowledgeBase

    config = load_config(tmp_path_factory.mktemp("browser") / "home", [f"model.path={tiny_lm_path}", "serve.poll_seconds=1"], env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval, real_embedder)
    kb.add([DATA / "kb"])
    kb.close()
    url, stop = start_server(config)
    yield url, config
    stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_customer_asks_rates_down_and_sees_the_agents_edited_reply(app, browser):
    url, config = app
    customer = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    customer.goto(url + "/")
    customer.fill("#customer-message textarea", "Do your gift cards ever expire?")
    customer.click("#customer-send")
    answer = customer.locator("#customer-chat .message", has_text="never expire").last
    answer.wait_for(timeout=60_000)
    assert "Sources:" in answer.inner_text()
    assert customer.locator("#customer-chat a", has_text="Gift card").count() >= 1
    customer.screenshot(path=str(ARTIFACTS / "01-customer-answer.png"), full_page=True)

    customer.fill("#rating-comment textarea", "I also wanted to know how to check the balance")
    customer.locator("#customer-chat button[aria-label='Dislike']").last.click()
    customer.get_by_text("Thanks for your feedback.").wait_for(timeout=30_000)

    agent = browser.new_context(viewport={"width": 1200, "height": 1100}).new_page()
    agent.goto(url + "/")
    agent.get_by_role("tab", name="Staff sign-in").click()
    agent.fill("#login-user textarea", "agent")
    agent.fill("#login-password input", "agent")
    agent.click("#login-button")
    agent.get_by_text("Signed in as").wait_for(timeout=30_000)
    agent.get_by_role("tab", name="Agent").click()
    agent.click("#queue-refresh")
    row = agent.locator("#queue-table", has_text="disliked")
    row.wait_for(timeout=30_000)
    agent.locator("#queue-table [role=gridcell]", has_text="disliked").first.click()
    reply_box = agent.locator("#agent-reply textarea")
    agent.wait_for_function("document.querySelector('#agent-reply textarea').value.includes('never expire')", timeout=60_000)
    agent.screenshot(path=str(ARTIFACTS / "02-agent-review.png"), full_page=True)
    reply_box.fill(EDITED)
    agent.click("#agent-edit")
    agent.get_by_text("Sent (edited).").wait_for(timeout=30_000)
    agent.screenshot(path=str(ARTIFACTS / "03-agent-sent.png"), full_page=True)

    customer.locator("#customer-chat .message", has_text="Support agent:").last.wait_for(timeout=30_000)
    assert EDITED in customer.locator("#customer-chat").inner_text()
    customer.screenshot(path=str(ARTIFACTS / "04-customer-sees-agent.png"), full_page=True)

    from chatbot import ConversationLog

    log = ConversationLog(config.log_file)
    action = log.agent_actions()[-1]
    assert action["action"] == "edited" and action["final"] == EDITED and "never expire" in action["draft"]
    assert log.feedback()[-1]["rating"] == -1 and "balance" in log.feedback()[-1]["comment"]


def test_the_conversation_survives_a_reload_and_starts_fresh_on_request(app, browser):
    url, _ = app
    page = browser.new_context().new_page()
    page.goto(url + "/")
    page.fill("#customer-message textarea", "How long does delivery to Canada take?")
    page.click("#customer-send")
    page.locator("#customer-chat .message", has_text="business days").last.wait_for(timeout=60_000)
    page.reload()
    page.locator("#customer-chat .message", has_text="business days").last.wait_for(timeout=30_000)
    page.click("#new-conversation")
    page.wait_for_function("!document.querySelector('#customer-chat').innerText.includes('business days')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "05-fresh-conversation.png"), full_page=True)
