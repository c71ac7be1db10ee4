"""Rate-limit windows and job leases in the shared database: a limit holds across app replicas, and a daily job
runs on one replica, not on each.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("rate_events",                          # one counted sign-in failure or chat message
                    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
                    sa.Column("bucket", sa.Text(), nullable=False),  # which window: "chat/session", "login/address", ...
                    sa.Column("key", sa.Text(), nullable=False),     # whose: a session, an address, an API key's name
                    sa.Column("at", sa.Float(), nullable=False),     # seconds since the epoch
                    if_not_exists=True)
    op.create_index("rate_events_key", "rate_events", ["bucket", "key", "at"], if_not_exists=True)
    op.create_table("leases",                               # a job that must run once: who took it, until when
                    sa.Column("name", sa.Text(), primary_key=True),
                    sa.Column("holder", sa.Text(), nullable=False),
                    sa.Column("taken_at", sa.Text(), nullable=False),
                    if_not_exists=True)
