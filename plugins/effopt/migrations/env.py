"""Alembic environment of the effopt store: runs on the connection :func:`effopt.migrations.upgrade` passes."""

from __future__ import annotations

from alembic import context

from effopt.migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
