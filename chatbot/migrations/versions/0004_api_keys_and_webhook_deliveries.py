"""API keys and webhook deliveries in the shared database (before: their own SQLite files in the home, imported
on first use), so that a key made on one replica is accepted by all and every replica records its deliveries.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("api_keys",
                    sa.Column("name", sa.Text(), primary_key=True),
                    sa.Column("key_hash", sa.Text(), nullable=False, unique=True),  # SHA-256 of the key, hex
                    sa.Column("per_minute", sa.Integer()),  # its chat messages per minute; NULL: limits.api_key_per_minute
                    sa.Column("created_at", sa.Text(), nullable=False),
                    sa.Column("last_used", sa.Text()),
                    sa.Column("revoked_at", sa.Text()),
                    if_not_exists=True)
    op.create_table("webhook_deliveries",
                    sa.Column("id", sa.Text(), primary_key=True),
                    sa.Column("event", sa.Text(), nullable=False),
                    sa.Column("url", sa.Text(), nullable=False),
                    sa.Column("body", sa.Text(), nullable=False),  # the JSON sent, the same on every attempt (also after a restart)
                    sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'pending'")),
                    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
                    sa.Column("last_error", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.Column("created", sa.Text(), nullable=False),
                    sa.Column("delivered", sa.Text(), nullable=False, server_default=sa.text("''")),
                    # The replica that sends it (host and home): after a restart each resumes its own pending ones.
                    sa.Column("owner", sa.Text(), nullable=False, server_default=sa.text("''")),
                    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')"),
                    if_not_exists=True)
