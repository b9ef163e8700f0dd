"""Alembic environment: runs on the connection `registry.migrate` hands over (config.attributes)."""

from __future__ import annotations

from alembic import context
from amrwatch.registry.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=False,
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
