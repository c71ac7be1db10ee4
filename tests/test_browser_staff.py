"""End to end in a real browser: the staff pages at /staff (the agents' queue and the ops console). Customers'
conversations are made through the app's API (gradio_client), as any client would. Screenshots are saved under
test-artifacts/; the agent and ops consoles also as docs/images/agent-console.png and docs/images/ops-console.png."""

from __future__ import annotations

import pytest
from browser import ARTIFACTS, app, browser, pages_closed, signed_in  # noqa: F401 (fixtures)
from conftest import REPO

pytestmark = pytest.mark.slow

DOCS_IMAGES = REPO / "docs" / "images"
DESKTOP = {"width": 1280, "height": 1000}
HANDOFF_TEXT = "I'm not certain I can answer that correctly"
EDITED = "Our gift cards never expire and have no fees. You can check the balance at tidewell.example/giftcard."


@pytest.fixture(scope="module")
def customer(app):
    """The app's API as a customer's client calls it."""
    from gradio_client import Client

    return Client(app[0] + "/", verbose=False)


def ask(customer, text: str, conversation_id: str = "") -> dict:
    return customer.predict(text, conversation_id, api_name="/chat")["reply"]


def agent_console(browser, url: str):
    """An agent's page on the Agent tab, once the queue has been read."""
    agent = signed_in(browser, url, "agent", DESKTOP)
    agent.get_by_role("tab", name="Agent").click()
    agent.locator("#queue-counts", has_text="waiting").wait_for(timeout=30_000)
    return agent


def waiting_for_agent(browser, url: str, customer, text: str):
    """A customer asks `text` and then for a person; the agent's page with that conversation open."""
    conversation = ask(customer, text)["conversation_id"]
    customer.predict(conversation, api_name="/talk_to_person")
    agent = agent_console(browser, url)
    open_row(agent, text)
    return agent, conversation


def open_row(page, text: str) -> None:
    """Open the queued conversation whose last customer message contains `text`; wait for its suggestion."""
    page.locator("#queue-table [role=gridcell]", has_text=text).first.click()
    page.locator("#agent-suggestion-info", has_text="Suggestion.").wait_for(timeout=60_000)


def test_an_agent_reload_keeps_the_session(app, browser, customer):
    url, _ = app
    customer.predict(ask(customer, "Where is my parcel from last week?")["conversation_id"], api_name="/talk_to_person")
    agent = agent_console(browser, url)
    agent.reload()  # no sign-in after it
    agent.locator("#login-status", has_text="Signed in as agent").wait_for(timeout=30_000)
    agent.locator("#queue-table [role=gridcell]", has_text="Where is my parcel").first.wait_for(timeout=30_000)
    assert agent.get_by_role("tab", name="Agent", selected=True).is_visible()
    agent.screenshot(path=str(ARTIFACTS / "10-agent-after-reload.png"), full_page=True)


def test_the_queue_refreshes_by_itself(app, browser, customer):
    url, _ = app
    agent = agent_console(browser, url)
    conversation = ask(customer, "Can my order be wrapped as a present?")["conversation_id"]
    customer.predict(conversation, api_name="/talk_to_person")
    # No click: the queue reads itself every few seconds, and says how long the customer has waited in words.
    agent.locator("#queue-table [role=gridcell]", has_text="wrapped as a present").first.wait_for(timeout=20_000)
    assert agent.locator("#queue-table [role=gridcell]", has_text="just now").count() >= 1


def test_the_suggestion_for_a_handed_off_conversation_is_not_the_handoff_text(app, browser, customer):
    url, _ = app
    reply = ask(customer, "Can I pay for my order with seashells from the beach?")
    assert reply["handed_off"] and HANDOFF_TEXT in reply["answer"]
    agent = agent_console(browser, url)
    open_row(agent, "seashells")
    agent.locator("#queue-table", has_text="handed off: no confident match").wait_for(timeout=10_000)
    assert HANDOFF_TEXT not in agent.input_value("#agent-reply textarea")
    assert HANDOFF_TEXT in agent.locator("#agent-history").inner_text()  # the customer's view shows it; the box does not
    agent.screenshot(path=str(ARTIFACTS / "11-agent-handoff-suggestion.png"), full_page=True)


def test_nothing_to_suggest_disables_send_as_is_and_an_empty_reply_is_refused(app, browser, customer):
    url, config = app
    agent, conversation = waiting_for_agent(browser, url, customer, "Good morning")
    agent.locator("#agent-suggestion-info", has_text="Nothing to suggest").wait_for(timeout=10_000)
    assert agent.locator("#agent-approve").is_disabled() and agent.input_value("#agent-reply textarea") == ""
    agent.click("#agent-edit")
    agent.get_by_text("the reply to send is empty").first.wait_for(timeout=10_000)
    agent.screenshot(path=str(ARTIFACTS / "12-agent-empty-reply-refused.png"), full_page=True)

    from chatbot import ConversationLog

    assert [m.role for m in ConversationLog(config.log_file).history(conversation)].count("agent") == 0


def test_closing_a_conversation_clears_the_editor_and_the_queue(app, browser, customer):
    url, config = app
    agent, conversation = waiting_for_agent(browser, url, customer, "Do you sell replacement lamp shades?")
    agent.click("#agent-close")
    agent.get_by_text("Conversation closed").wait_for(timeout=30_000)
    agent.wait_for_function("document.querySelector('#agent-reply textarea').value === ''", timeout=10_000)
    assert all(agent.locator(f"#agent-{b}").is_disabled() for b in ("approve", "edit", "reject", "close"))
    assert "replacement lamp shades" not in agent.locator("#agent-history").inner_text()
    agent.wait_for_function("!document.querySelector('#queue-table').innerText.includes('replacement lamp shades')", timeout=10_000)
    assert customer.predict(conversation, api_name="/status") == "resolved"


def test_a_rated_down_reply_is_edited_by_an_agent_and_reaches_the_customer(app, browser, customer):
    url, config = app
    reply = ask(customer, "Do your gift cards ever expire?")
    assert "never expire" in reply["answer"]
    customer.predict(reply["message_id"], False, "I also wanted to know how to check the balance", api_name="/rate")

    agent = agent_console(browser, url)
    agent.locator("#queue-table [role=gridcell]", has_text="rated down").first.wait_for(timeout=30_000)
    open_row(agent, "gift cards ever expire")
    assert "never expire" in agent.input_value("#agent-reply textarea")
    agent.locator("#agent-history", has_text="Rated down by the customer").wait_for(timeout=10_000)
    assert "check the balance" in agent.locator("#agent-history").inner_text()
    agent.screenshot(path=str(ARTIFACTS / "13-agent-review.png"), full_page=True)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    agent.screenshot(path=str(DOCS_IMAGES / "agent-console.png"))
    agent.fill("#agent-reply textarea", EDITED)
    agent.click("#agent-edit")
    agent.get_by_text("Sent to the customer.").wait_for(timeout=30_000)
    agent.wait_for_function("!document.querySelector('#queue-table').innerText.includes('gift cards ever expire')", timeout=10_000)
    agent.screenshot(path=str(ARTIFACTS / "14-agent-sent.png"), full_page=True)

    from chatbot import ConversationLog

    action = ConversationLog(config.log_file).agent_actions()[-1]
    assert action["action"] == "edited" and action["final"] == EDITED and "never expire" in action["draft"]
    seen = customer.predict(reply["conversation_id"], api_name="/history")
    assert seen[-1]["role"] == "agent" and seen[-1]["text"] == EDITED


def test_ops_browse_and_remove_knowledge_base_entries(app, browser):
    url, _ = app
    ops = signed_in(browser, url, "ops", DESKTOP)
    ops.get_by_role("tab", name="Ops").click()
    count = ops.locator("#kb-count", has_text="Entries 1\u201320 of")
    count.wait_for(timeout=30_000)  # listed at once, with its headers
    total = int(count.inner_text().rsplit(" ", 1)[1])
    assert ops.locator("#kb-entries", has_text="title").is_visible()
    ops.click("#kb-next")
    ops.locator("#kb-count", has_text="Entries 21\u201340").wait_for(timeout=30_000)
    row = ops.locator("#kb-entries [role=gridcell]").first
    entry_id = row.inner_text().strip()
    row.click()
    ops.click("#kb-remove")
    ops.locator("#kb-remove-question", has_text=f"({entry_id})").wait_for(timeout=10_000)
    ops.screenshot(path=str(ARTIFACTS / "15-ops-knowledge-base.png"), full_page=True)
    ops.click("#kb-remove-confirm")
    ops.get_by_text(f"Removed {entry_id}.").wait_for(timeout=30_000)
    ops.locator("#kb-count", has_text=f"of {total - 1}").wait_for(timeout=30_000)
    ops.fill("#kb-query textarea", "gift card")
    ops.locator("#kb-count", has_text="Entries 1\u2013").wait_for(timeout=30_000)
    assert "gift" in ops.locator("#kb-entries").inner_text().lower()


def test_ops_analytics_draw_one_day_with_whole_numbers(app, browser, customer):
    url, _ = app
    ask(customer, "How long does delivery to Canada take?")  # at least one conversation today
    ops = signed_in(browser, url, "ops", DESKTOP)
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Analytics").click()
    ops.locator("#analytics-summary", has_text="conversations").wait_for(timeout=30_000)
    bars = ops.locator("#analytics-per-day .mark-rect path")
    bars.first.wait_for(timeout=30_000)
    assert bars.count() == 1  # one day, one bar with a height
    height = ops.evaluate("() => document.querySelector('#analytics-per-day .mark-rect path').getBBox().height")
    labels = ops.locator("#analytics-per-day .role-axis-label text").all_text_contents()
    assert height > 10 and labels and all("." not in label for label in labels)
    shares = ops.locator("#analytics-outcomes .role-axis-label text").all_text_contents()
    assert {"0%", "100%"} <= set(shares)  # a share axis, not the shares as categories
    ops.screenshot(path=str(ARTIFACTS / "16-ops-analytics.png"), full_page=True)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    ops.screenshot(path=str(DOCS_IMAGES / "ops-console.png"))


def test_clicking_a_version_fills_the_version_box(app, browser):
    url, _ = app
    ops = signed_in(browser, url, "ops", DESKTOP)
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Models").click()
    ops.locator("#models-table [role=gridcell]", has_text="tiny-llama").first.click()
    ops.wait_for_function("document.querySelector('#models-version textarea').value === 'tiny-llama'", timeout=10_000)


def test_ops_train_a_version_promote_it_through_the_gate_and_read_the_report(app, browser, registry):
    url, config = app
    ops = signed_in(browser, url, "ops", {"width": 1300, "height": 1200})
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Training").click()
    ops.fill("#train-steps input", "1")
    ops.click("#train-start")
    ops.get_by_text("Started train sft").wait_for(timeout=30_000)
    # Minutes: training first turns every question variant of the knowledge base into an example (slow on a busy machine).
    ops.locator("#jobs-table [role=gridcell]", has_text="done").first.wait_for(timeout=600_000)
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
                          timeout=600_000)

    serving = registry(config).serving_version("lm")
    assert serving.startswith("sft-")
    ops.get_by_role("tab", name="Models").click()
    ops.click("#models-refresh")
    ops.fill("#models-version textarea", serving)
    ops.click("#models-report")
    ops.locator("#gate-report", has_text="promoted").wait_for(timeout=30_000)
    ops.locator("#gate-plot img").wait_for(timeout=30_000)
    ops.screenshot(path=str(ARTIFACTS / "06-ops-gate-report.png"), full_page=True)
    # The version it was compared against shows the same comparison (kept in the candidate's folder).
    ops.fill("#models-version textarea", "tiny-llama")
    ops.click("#models-report")
    ops.locator("#gate-report", has_text="tiny-llama was the serving version").wait_for(timeout=30_000)


def test_an_agents_answer_to_a_handed_off_question_becomes_an_entry_that_answers_the_next_customer(app, browser, customer):
    url, _ = app
    assert ask(customer, "Do you engrave names on cutting boards?")["handed_off"]
    agent = agent_console(browser, url)
    open_row(agent, "engrave names")
    agent.fill("#agent-reply textarea", "Yes: our maple cutting boards can be engraved with up to 20 characters for $15. Engraved items are final sale.")
    agent.click("#agent-reject")
    agent.get_by_text("Sent to the customer.").wait_for(timeout=30_000)
    ops = signed_in(browser, url, "ops", DESKTOP)
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Suggestions").click()
    ops.locator("#suggestions [role=gridcell]", has_text="engrave names").first.click()
    ops.locator("#suggestion-evidence", has_text="asked in 1 conversation").wait_for(timeout=30_000)
    assert "up to 20 characters" in ops.input_value("#suggestion-answer textarea")
    ops.fill("#suggestion-questions textarea", "Do you engrave names on cutting boards?\nCan I get a cutting board engraved?")
    ops.screenshot(path=str(ARTIFACTS / "19-ops-suggestions.png"), full_page=True)
    ops.click("#suggestion-accept")
    ops.get_by_text("Accepted the new entry").wait_for(timeout=30_000)
    reply = ask(customer, "could you engrave my cutting board?")
    assert not reply["handed_off"] and "up to 20 characters" in reply["answer"]
    assert reply["sources"][0]["id"].startswith("learned-")


def test_ops_add_a_help_centre_site_and_sync_it_with_progress(app, browser):
    from helpcentre import serve_site

    url, _ = app
    ops = signed_in(browser, url, "ops", DESKTOP)
    ops.get_by_role("tab", name="Ops").click()
    ops.get_by_role("tab", name="Sources").click()
    ops.locator("#sources", has_text="kb/").wait_for(timeout=30_000)  # the demo folder the app was loaded from
    with serve_site(limit=15) as site:
        ops.fill("#source-url textarea", site.base)
        ops.click("#source-add")
        ops.locator("#source-status", has_text=f"{len(site.articles)} added").wait_for(timeout=180_000)
        host = site.base.split("//", 1)[1]
        ops.locator("#sources", has_text=host).wait_for(timeout=10_000)
        ops.screenshot(path=str(ARTIFACTS / "20-ops-sources.png"), full_page=True)
        ops.get_by_role("gridcell", name=host).click()
        ops.click("#source-sync")
        ops.locator("#source-status", has_text=f"{len(site.articles)} unchanged, 0 removed").wait_for(timeout=180_000)
