"""The version registry in the shared database (before: a `card.json` in each version's folder and `serving.json`
beside them, imported on first use), so that every replica reads one registry and one serving pointer; the
weights stay in the models folder (`storage.models_dir`).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("model_versions",  # one row per complete version: its card
                    sa.Column("version", sa.Text(), primary_key=True),
                    sa.Column("kind", sa.Text(), nullable=False),
                    sa.Column("parent", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("base", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("method", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("data_hash", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("settings", sa.Text(), nullable=False, server_default=sa.text("'{}'")),  # JSON
                    sa.Column("metrics", sa.Text(), nullable=False, server_default=sa.text("'{}'")),  # JSON
                    sa.Column("created", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("path", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.CheckConstraint("kind IN ('lm', 'adapter', 'reward', 'retriever')"),
                    if_not_exists=True)
    op.create_table("serving",  # the serving version of each role ("" for the retriever: the configured one)
                    sa.Column("role", sa.Text(), primary_key=True),
                    sa.Column("version", sa.Text(), nullable=False),
                    sa.CheckConstraint("role IN ('lm', 'reward', 'retriever')"),
                    if_not_exists=True)
    op.create_table("serving_history",  # the pointer before each change, which rollback walks back through
                    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
                    sa.Column("changed", sa.Text(), nullable=False),
                    sa.Column("state", sa.Text(), nullable=False),  # JSON {role: version}
                    sa.Column("at", sa.Text(), nullable=False),
                    if_not_exists=True)
