"""The conversation log: conversations, messages, ratings, agents' actions, suggestions, CSAT, out-of-hours
hand-offs and customers' contact addresses.

Every table is created only if missing, so that a home made before migrations existed is brought under them
in place, its data kept.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# An id that counts up and is never reused: BIGINT (identity) on PostgreSQL, SQLite's INTEGER rowid there.
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", SERIAL, primary_key=True, autoincrement=True)


def _text(name: str, default: str | None = None) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=False, server_default=None if default is None else sa.text(f"'{default}'"))


def _conversation(primary_key: bool = False) -> sa.Column:
    return sa.Column("conversation_id", sa.Text(), sa.ForeignKey("conversations.id"), nullable=False, primary_key=primary_key)


def _table(name: str, *columns) -> None:
    # AUTOINCREMENT on SQLite (it applies to an integer id only): an id is never reused after a delete.
    op.create_table(name, *columns, if_not_exists=True, sqlite_autoincrement=True)


def upgrade() -> None:
    _table("conversations",
           sa.Column("id", sa.Text(), primary_key=True),
           _text("channel"),
           _text("status", "open"),
           _text("created_at"),
           _text("updated_at"),
           sa.CheckConstraint("status IN ('open', 'handed_off', 'resolved')"))
    _table("messages",
           _id(),
           _conversation(),
           _text("role"),
           _text("text"),
           _text("sources", "[]"),           # JSON list of {n, id, title, url, score}
           sa.Column("confidence", sa.Float()),
           sa.Column("grounding", sa.Float()),
           sa.Column("handed_off", sa.Integer(), nullable=False, server_default=sa.text("0")),
           _text("reason", ""),              # why the bot handed off or refused, '' when it answered
           _text("mode", ""),                # how a bot reply was made: generate, template, policy
           _text("draft", ""),               # the model's reply when policy replaced it (for agents, training)
           _text("model", ""),
           sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")),
           sa.Column("reply_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")),
           sa.Column("latency_ms", sa.Float()),
           _text("created_at"),
           sa.CheckConstraint("role IN ('customer', 'bot', 'agent')"))
    op.create_index("messages_conversation", "messages", ["conversation_id", "id"], if_not_exists=True)
    _table("feedback",
           _id(),
           sa.Column("message_id", SERIAL, sa.ForeignKey("messages.id"), nullable=False),
           sa.Column("rating", sa.Integer(), nullable=False),
           _text("comment", ""),
           _text("created_at"),
           sa.CheckConstraint("rating IN (-1, 1)"))
    _table("agent_actions",
           _id(),
           _conversation(),
           sa.Column("draft_message_id", SERIAL, sa.ForeignKey("messages.id")),
           _text("draft"),
           _text("final"),
           _text("action"),
           _text("agent", ""),
           sa.Column("reply_message_id", SERIAL, sa.ForeignKey("messages.id")),
           _text("created_at"),
           sa.CheckConstraint("action IN ('approved', 'edited', 'rejected')"))
    _table("suggestions",
           _id(),
           _text("kind"),
           _text("entry_id"),
           _text("questions", "[]"),         # JSON list: the wordings to add (new entry, variant)
           _text("answer", ""),              # the proposed answer (new entry, revision)
           _text("previous", ""),            # the entry's answer before a revision, for undo
           _text("evidence", "{}"),          # JSON {conversations, count, first, last, ...}
           sa.Column("fingerprint", sa.Text(), nullable=False, unique=True),  # the same evidence is never proposed twice
           _text("status", "open"),
           _text("created_at"),
           _text("decided_at", ""),
           _text("decided_by", ""),
           sa.CheckConstraint("kind IN ('new_entry', 'variant', 'revision', 'flag')"),
           sa.CheckConstraint("status IN ('open', 'accepted', 'rejected', 'reverted')"))
    _table("csat",                             # the customer's 1-5 rating of a closed conversation: one each
           _conversation(primary_key=True),
           sa.Column("score", sa.Integer(), nullable=False),
           _text("comment", ""),
           _text("created_at"),
           sa.CheckConstraint("score BETWEEN 1 AND 5"))
    _table("after_hours",                      # the latest hand-off of a conversation outside business hours
           _conversation(primary_key=True),
           _text("opens_at"),                # when the team is back (UTC)
           _text("created_at"))
    # An address a customer left for the answer to an out-of-hours hand-off: read only by the agent answering,
    # never by exports, training data, analytics or webhooks.
    _table("contact_emails",
           _conversation(primary_key=True),
           _text("email"),
           _text("created_at"))
