"""A knowledge base: entries, their searchable units, the vector cache, remembered sources, and the lexical index.

The lexical index is SQLite's FTS5 on SQLite (kept in step by triggers) and a postings table on PostgreSQL,
written by the store from FTS5's own tokenizer, so that both score alike (retrieval.bm25). Every table is
created only if missing: a knowledge base made before migrations existed is brought under them in place.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TOKENIZE = "porter unicode61 remove_diacritics 2"  # FTS5's tokenizer; retrieval.store.TOKENIZE is the same

# An id that counts up and is never reused: BIGINT (identity) on PostgreSQL, SQLite's INTEGER rowid there.
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

FTS5 = (
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS units_fts USING fts5(
        title, text, content='units', content_rowid='uid', tokenize='{TOKENIZE}')""",
    "CREATE VIRTUAL TABLE IF NOT EXISTS units_vocab USING fts5vocab(units_fts, 'row')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS units_instance USING fts5vocab(units_fts, 'instance')",
    """CREATE TRIGGER IF NOT EXISTS units_ai AFTER INSERT ON units BEGIN
        INSERT INTO units_fts(rowid, title, text) VALUES (new.uid, new.title, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS units_ad AFTER DELETE ON units BEGIN
        INSERT INTO units_fts(units_fts, rowid, title, text) VALUES ('delete', old.uid, old.title, old.text);
    END""",
)


def _text(name: str, default: str | None = None, **kw) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=False, server_default=None if default is None else sa.text(f"'{default}'"), **kw)


def _unit() -> sa.Column:
    return sa.Column("uid", sa.BigInteger(), sa.ForeignKey("units.uid", ondelete="CASCADE"), nullable=False,
                     autoincrement=False)


def upgrade() -> None:
    op.create_table("meta", _text("key", primary_key=True), _text("value"), if_not_exists=True)
    op.create_table(
        "entries", _text("id", primary_key=True), _text("kind"), _text("title"), _text("answer"),
        _text("category", ""), _text("url", ""), _text("source", ""), _text("content_hash"), _text("created_at"),
        _text("updated_at"), if_not_exists=True,
    )
    # What search matches: an entry's question variants and its passages. vector_key is NULL for units that
    # only the lexical index holds.
    op.create_table(
        "units",
        sa.Column("uid", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Text(), sa.ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
        _text("kind"), sa.Column("ordinal", sa.Integer(), nullable=False), _text("title"), _text("text"),
        sa.Column("vector_key", sa.Text()),
        sa.CheckConstraint("kind IN ('question', 'passage')"),
        if_not_exists=True, sqlite_autoincrement=True,
    )
    op.create_index("units_entry", "units", ["entry_id"], if_not_exists=True)
    # Embedding cache by content: key = hash(model id, text). Kept after an entry is removed so that re-adding it
    # embeds nothing.
    op.create_table("vectors", _text("key", primary_key=True), sa.Column("vector", sa.LargeBinary(), nullable=False),
                    if_not_exists=True)
    # Where entries came from, so that `kb sync` can read it again: entries.source names the source.
    op.create_table(
        "sources", _text("name", primary_key=True), _text("kind"), _text("location"),
        sa.Column("max_pages", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer(), nullable=False, server_default="0"),
        _text("added_at"), _text("synced_at", ""), _text("error", ""), if_not_exists=True,
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in FTS5:
            op.execute(statement)
        return
    # The postings BM25 reads: each unit's length in tokens, and each term's units with its weighted count.
    op.create_table("unit_sizes", _unit(), sa.Column("tokens", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("uid"))
    op.create_table("postings", _text("term"), _unit(), sa.Column("weight", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("term", "uid"))
    op.create_index("postings_unit", "postings", ["uid"])
