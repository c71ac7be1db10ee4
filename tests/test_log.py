"""The conversation log on both engines (SQLite and PostgreSQL): schema, redaction before storage, feedback,
agent actions, refusals, migrations."""

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from chatbot.log import MIGRATIONS, ConversationLog, LogError
from retrieval.database import Database, DatabaseError, copy_tables, head, revision


@pytest.fixture
def log(database):
    log = ConversationLog(database)
    yield log
    log.close()


def test_schema_has_the_tables_and_columns_the_product_relies_on(log):
    inspector = sa.inspect(log.db.engine)
    columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in ("conversations", "messages", "feedback", "agent_actions")}
    assert {"id", "channel", "status", "created_at", "updated_at"} <= columns["conversations"]
    assert {"role", "text", "sources", "confidence", "model", "prompt_tokens", "reply_tokens", "latency_ms",
            "handed_off", "reason", "mode", "draft"} <= columns["messages"]
    assert {"message_id", "rating", "comment"} <= columns["feedback"]
    assert {"draft", "final", "action", "draft_message_id", "reply_message_id"} <= columns["agent_actions"]
    assert revision(log.db) == head(MIGRATIONS)
    if log.db.dialect == "sqlite":
        assert log.db.rows("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_customer_text_is_redacted_before_it_is_stored(log):
    conv = log.start("web")
    log.add_message(conv, "customer", "I'm jane@example.com, card 4111 1111 1111 1111, call +1 (800) 555-0142")
    raw = log.db.rows("SELECT text FROM messages")[0]["text"]
    assert raw == "I'm [EMAIL], card [CARD], call [PHONE]"


def test_redaction_can_be_turned_off(database):
    log = ConversationLog(database, redact_kinds=[])
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


def test_ids_are_never_reused_after_a_delete(log):
    conv = log.start("web")
    first = log.add_feedback(log.add_message(conv, "bot", "a"), thumbs_up=True)
    second = log.add_feedback(log.add_message(conv, "bot", "b"), thumbs_up=True)
    log.db.execute("DELETE FROM feedback WHERE id = :id", id=second)
    assert log.add_feedback(log.add_message(conv, "bot", "c"), thumbs_up=False) > second > first


def test_a_log_made_before_migrations_is_brought_under_them_with_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # the tables as the app created them before it used Alembic
    old.executescript("""
        CREATE TABLE conversations(id TEXT PRIMARY KEY, channel TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open',
                                   created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL REFERENCES conversations(id),
            role TEXT NOT NULL, text TEXT NOT NULL, sources TEXT NOT NULL DEFAULT '[]', confidence REAL, grounding REAL,
            handed_off INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '', mode TEXT NOT NULL DEFAULT '',
            draft TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0,
            reply_tokens INTEGER NOT NULL DEFAULT 0, latency_ms REAL, created_at TEXT NOT NULL);
        INSERT INTO conversations VALUES ('c1', 'web', 'handed_off', '2026-11-01T10:00:00', '2026-11-01T10:00:00');
        INSERT INTO messages(conversation_id, role, text, created_at) VALUES ('c1', 'customer', 'where is my order', '2026-11-01T10:00:00');
    """)
    old.close()
    log = ConversationLog(path)
    assert revision(log.db) == head(MIGRATIONS)
    assert [m.text for m in log.history("c1")] == ["where is my order"] and log.conversation("c1")["status"] == "handed_off"
    log.add_feedback(log.add_message("c1", "bot", "It ships tomorrow."), thumbs_up=True)  # the tables it lacked exist now
    assert log.rating_counts() == {"up": 1, "down": 0}


def test_a_schema_newer_than_the_code_is_refused_and_left_alone(database):
    ConversationLog(database).close()
    db = Database(database)
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="schema revision 9999 is newer than this supportbot knows"):
        ConversationLog(database)
    assert revision(db) == "9999"
    db.close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(database):
    errors, logs = [], []

    def open_log():
        try:
            logs.append(ConversationLog(database))
        except Exception as err:  # noqa: BLE001 - the assertion below shows it
            errors.append(err)

    threads = [threading.Thread(target=open_log) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(logs) == 4
    conv = logs[0].start("web")
    assert logs[3].conversation(conv)["channel"] == "web"  # one schema, shared
    for log in logs:
        log.close()


def test_an_unreachable_database_is_one_clear_line(postgres_cluster):
    url = postgres_cluster.url().replace(str(postgres_cluster.port), "1")  # nothing listens on port 1
    with pytest.raises(DatabaseError, match=r"^database postgresql://supportbot@127.0.0.1:1/postgres: cannot connect"):
        ConversationLog(url)


def test_copy_moves_every_row_and_ids_continue_after_them(tmp_path, postgres_cluster):
    source = ConversationLog(tmp_path / "home.sqlite")
    conv = source.start("web")
    bot = source.add_message(conv, "bot", "Returns take 30 days.", sources=[{"id": "returns"}], confidence=0.81)
    source.add_feedback(bot, thumbs_up=False, comment="too slow")
    source.add_agent_action(conv, bot, "Returns take 30 days from delivery.", "edited", agent="sam")
    source.set_csat(conv, 4, "quick")
    url = postgres_cluster.new_database()
    target = ConversationLog(url)
    tables = ["conversations", "messages", "feedback", "agent_actions", "csat"]
    report = copy_tables(source.db, target.db, tables)
    assert {t: r["rows"] for t, r in report.items()} == {"conversations": 1, "messages": 2, "feedback": 1, "agent_actions": 1, "csat": 1}
    assert target.history(conv) == source.history(conv) and target.csat(conv)["comment"] == "quick"
    assert target.add_message(conv, "customer", "thanks") == source.add_message(conv, "customer", "thanks")  # ids go on alike
    with pytest.raises(DatabaseError, match="table conversations is not empty"):
        copy_tables(source.db, target.db, tables)
    source.close()
    target.close()


def test_opening_a_new_file_another_process_is_writing_waits_for_it(tmp_path):
    """Switching a file to WAL is refused at once, not after the busy timeout, while another connection writes it
    (before it is WAL): the opener waits its turn instead of failing."""
    path = tmp_path / "log.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE early(x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO early VALUES (1)")
    threading.Timer(0.3, lambda: writer.execute("COMMIT")).start()
    log = ConversationLog(path)
    assert log.db.rows("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    log.close()
    writer.close()


def test_a_copy_checksum_does_not_depend_on_the_order_rows_come_in():
    """PostgreSQL sorts text by its locale's collation and SQLite byte by byte: the same rows must check alike."""
    from retrieval.database import _checksum

    rows = [{"id": "priv-contact", "n": 1}, {"id": "privacy-policy", "n": 2}, {"id": "Zebra", "n": 3}]
    assert _checksum(rows) == _checksum(rows[::-1]) != _checksum(rows[:2])
