"""Staff sessions in the shared database, so that a sign-in on one app replica holds on every other.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("staff_sessions",
                    sa.Column("token_hash", sa.Text(), primary_key=True),  # SHA-256 of the token: the token is never stored
                    sa.Column("user_name", sa.Text(), nullable=False),
                    sa.Column("role", sa.Text(), nullable=False),
                    sa.Column("expires", sa.Float(), nullable=False),     # seconds since the epoch
                    if_not_exists=True)
