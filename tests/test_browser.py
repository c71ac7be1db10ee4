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
    from chatbot import load_config, save_settings
    from retrieval import KnowledgeBase

    config = load_config(tmp_path_factory.mktemp("browser") / "home", env={})
    # In config.toml, so that the training and gate jobs the ops console starts use them too.
    save_settings(config, {"model.path": str(tiny_lm_path), "serve.poll_seconds": 1, "gate.questions": 4})
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


def signed_in(browser, url: str, user: str, viewport: dict):
    """A new page signed in with the demo account `user` (password = name)."""
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(url + "/")
    page.get_by_role("tab", name="Staff sign-in").click()
    page.fill("#login-user textarea", user)
    page.fill("#login-password input", user)
    page.click("#login-button")
    page.get_by_text("Signed in as").wait_for(timeout=30_000)
    return page


def test_customer_asks_rates_down_and_sees_the_agents_edited_reply(app, browser):
    url, config = app
    customer = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    customer.goto(url + "/")
    customer.fill("#customer-message textarea", "Do your gift cards ever expire?")
    customer.click("#customer-send")
    answer = customer.locator("#customer-chat .message", has_text="never expire").last
    answer.wait_for(timeout=60_000)
    assert "Sources:" in answer.inner_text()
    customer.locator("#customer-chat a", has_text="Gift card").first.wait_for(timeout=30_000)  # the source's link
    customer.screenshot(path=str(ARTIFACTS / "01-customer-answer.png"), full_page=True)

    customer.fill("#rating-comment textarea", "I also wanted to know how to check the balance")
    customer.locator("#customer-chat button[aria-label='Dislike']").last.click()
    customer.get_by_text("Thanks for your feedback.").wait_for(timeout=30_000)

    agent = signed_in(browser, url, "agent", {"width": 1200, "height": 1100})
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


def test_ops_train_a_version_promote_it_through_the_gate_and_read_the_report(app, browser):
    url, config = app
    ops = signed_in(browser, url, "ops", {"width": 1300, "height": 1200})
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Training").click()
    ops.fill("#train-steps input", "1")
    ops.click("#train-start")
    ops.get_by_text("Started train sft").wait_for(timeout=30_000)
    ops.locator("#jobs-table [role=gridcell]", has_text="done").first.wait_for(timeout=240_000)
    ops.screenshot(path=str(ARTIFACTS / "05-ops-training-done.png"), full_page=True)

    ops.get_by_role("tab", name="Models").click()
    ops.click("#models-refresh")
    ops.locator("#models-table [role=gridcell]", has_text="sft-").first.wait_for(timeout=30_000)
    ops.fill("#models-version textarea", "latest")
    ops.locator("#models-force input").check()
    ops.click("#models-promote")
    ops.get_by_text("Gate running for latest").wait_for(timeout=30_000)
    ops.get_by_role("tab", name="Training").click()
    ops.locator("#jobs-table [role=gridcell]", has_text="promote").first.wait_for(timeout=30_000)
    ops.wait_for_function("[...document.querySelectorAll('#jobs-table [role=gridcell]')].filter(c => c.innerText.trim() == 'done').length >= 2",
                          timeout=240_000)

    from chatbot.versions import Versions

    serving = Versions(config.home).serving_version("lm")
    assert serving.startswith("sft-")
    ops.get_by_role("tab", name="Models").click()
    ops.click("#models-refresh")
    ops.fill("#models-version textarea", serving)
    ops.click("#models-report")
    ops.locator("#gate-report", has_text="promoted").wait_for(timeout=30_000)
    ops.locator("#gate-plot img").wait_for(timeout=30_000)
    ops.screenshot(path=str(ARTIFACTS / "06-ops-gate-report.png"), full_page=True)
