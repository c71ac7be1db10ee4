"""The conversation log: schema, redaction before storage, feedback, agent actions, refusals."""

import sqlite3

import pytest

from chatbot.log import ConversationLog, LogError


@pytest.fixture
def log(tmp_path):
    log = ConversationLog(tmp_path / "log.sqlite")
    yield log
    log.close()


def test_schema_has_the_tables_and_columns_the_product_relies_on(log, tmp_path):
    db = sqlite3.connect(tmp_path / "log.sqlite")
    columns = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in ("conversations", "messages", "feedback", "agent_actions")}
    assert {"id", "channel", "status", "created_at", "updated_at"} <= columns["conversations"]
    assert {"role", "text", "sources", "confidence", "model", "prompt_tokens", "reply_tokens", "latency_ms",
            "handed_off", "reason", "mode", "draft"} <= columns["messages"]
    assert {"message_id", "rating", "comment"} <= columns["feedback"]
    assert {"draft", "final", "action", "draft_message_id", "reply_message_id"} <= columns["agent_actions"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_customer_text_is_redacted_before_it_is_stored(log, tmp_path):
    conv = log.start("web")
    log.add_message(conv, "customer", "I'm jane@example.com, card 4111 1111 1111 1111, call +1 (800) 555-0142")
    raw = sqlite3.connect(tmp_path / "log.sqlite").execute("SELECT text FROM messages").fetchone()[0]
    assert raw == "I'm [EMAIL], card [CARD], call [PHONE]"


def test_redaction_can_be_turned_off(tmp_path):
    log = ConversationLog(tmp_path / "plain.sqlite", redact_kinds=[])
    conv = log.start("web")
    log.add_message(conv, "customer", "mail jane@example.com")
    assert log.history(conv)[0].text == "mail jane@example.com"


def test_messages_keep_their_metadata_in_order(log):
    conv = log.start("cli")
    log.add_message(conv, "customer", "hi")
    bot = log.add_message(conv, "bot", "Hello [1]", sources=[{"id": "x", "title": "X", "score": 0.9}], confidence=0.9,
                          model="m1", prompt_tokens=100, reply_tokens=12, latency_ms=250.0)
    history = log.history(conv)
    assert [m.role for m in history] == ["customer", "bot"]
    assert history[1].id == bot and history[1].sources[0]["id"] == "x" and history[1].model == "m1"
    assert (history[1].prompt_tokens, history[1].reply_tokens, history[1].latency_ms) == (100, 12, 250.0)


def test_feedback_and_agent_actions(log):
    conv = log.start("web")
    draft = log.add_message(conv, "bot", "Returns take 45 days.")
    log.add_feedback(draft, thumbs_up=False, comment="wrong, reach me at jane@example.com")
    assert log.feedback()[0]["rating"] == -1 and log.feedback()[0]["comment"] == "wrong, reach me at [EMAIL]"
    log.add_feedback(draft, thumbs_up=False, comment="wrong, reach me at jane@example.com")  # the same rating again: one row
    assert len(log.feedback()) == 1 and log.ratings(conv) == {draft: {"rating": -1, "comment": "wrong, reach me at [EMAIL]"}}
    log.add_feedback(draft, thumbs_up=True)  # changed: replaces it, comment and all
    assert [(f["rating"], f["comment"]) for f in log.feedback()] == [(1, "")]
    assert log.add_feedback(draft, thumbs_up=None) == 0 and log.feedback() == [] and log.ratings(conv) == {}  # cleared
    log.add_agent_action(conv, draft, "Returns are accepted within 45 days of delivery.", "edited", agent="sam")
    action = log.agent_actions()[0]
    assert (action["draft"], action["action"], action["agent"]) == ("Returns take 45 days.", "edited", "sam")
    assert log.history(conv)[-1].role == "agent" and log.history(conv)[-1].id == action["reply_message_id"]
    log.set_status(conv, "resolved")
    assert log.conversation(conv)["status"] == "resolved"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda log, conv, m: log.add_feedback(m + 99, True), "no bot reply"),
        (lambda log, conv, m: log.add_agent_action(conv, m, "x", "shrugged"), "action 'shrugged'"),
        (lambda log, conv, m: log.add_agent_action(conv, m, "  ", "edited"), "empty"),
        (lambda log, conv, m: log.add_agent_action("nope", None, "x", "edited"), "no conversation"),
        (lambda log, conv, m: log.set_status(conv, "closed"), "status 'closed'"),
        (lambda log, conv, m: log.add_message("nope", "customer", "x"), "no conversation"),
    ],
)
def test_bad_operations_are_refused_and_change_nothing(log, call, message):
    conv = log.start("web")
    bot = log.add_message(conv, "bot", "draft")
    with pytest.raises(LogError, match=message):
        call(log, conv, bot)
    assert len(log.history(conv)) == 1 and log.feedback() == [] and log.agent_actions() == []
