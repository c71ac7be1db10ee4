"""Staff accounts in the shared database (before: only `serve.users` entries of each home's config), so that an
account added with `supportbot user add` on one machine signs in on every replica.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("staff_accounts",
                    sa.Column("name", sa.Text(), primary_key=True),
                    sa.Column("role", sa.Text(), nullable=False),
                    sa.Column("password_hash", sa.Text(), nullable=False),  # scrypt$salt$digest, never the password
                    sa.Column("created_at", sa.Text(), nullable=False),
                    sa.CheckConstraint("role IN ('agent', 'ops')"),
                    if_not_exists=True)
