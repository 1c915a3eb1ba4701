"""Alembic's environment: registry/db.py hands it an open connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

from swarmcast.registry.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
