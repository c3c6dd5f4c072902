"""Alembic environment: always driven by :func:`runtime.storage.migrations.upgrade`.

The caller hands over an open connection (``config.attributes["connection"]``)
already holding the migration lock, so this module never opens its own.
"""

from __future__ import annotations

from alembic import context

from runtime.storage.migrations import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through runtime.storage.migrations.upgrade() or `plugway db upgrade`")

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    # SQLite cannot ALTER most things: later revisions get copy-and-move batch operations.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
