"""Alembic's entry point for a knowledge base's schema: run by `retrieval.database.migrate`, which hands over an
open connection inside its transaction (and lock)."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
