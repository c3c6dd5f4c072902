"""Alembic environment: always driven by :func:`runtime.storage.migrations.upgrade`.

The caller hands over an open connection (``config.attributes["connection"]``)
already holding the migration lock, so this module never opens its own. Writing a
revision with ``--autogenerate`` also hands over the tables to compare against
(``config.attributes["target_metadata"]``, from ``runtime.api.schema``); an upgrade needs none.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through runtime.storage.migrations.upgrade() or `plugway db upgrade`")

context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("target_metadata"),
    # SQLite cannot ALTER most things: later revisions get copy-and-move batch operations.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
