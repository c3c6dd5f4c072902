"""Schema migrations (Alembic), shipped inside the package.

``upgrade(url_or_engine)`` brings a database to the latest revision; the
gateway calls it on start and ``plugway db upgrade`` calls it by hand. Alembic
is configured in code (no ``alembic.ini`` in the working directory), so an
installed ``plugway`` migrates from anywhere.

Several processes may start at once: on PostgreSQL the upgrade runs under a
session advisory lock (one per database schema), and all of it in one
transaction; on a SQLite file it runs under an exclusive lock on a
``<file>.migrate.lock`` beside the database. The loser of the race waits, then
finds the schema at head and does nothing.

The migrations name no table's owner: the core and each feature declare their own tables
(``Feature.tables``), and ``runtime.api.schema`` gathers them for a new revision
(developers)::

    python -m runtime.api.schema revision -m "what changed" [--autogenerate URL]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: str | Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to call from several processes at once."""
    from runtime.storage.engine import make_engine

    engine = make_engine(database) if isinstance(database, str) else database
    try:
        with _migration_lock(engine) as connection:
            at_head = current_revision(connection) == head_revision()
            connection.rollback()
            if at_head and revision == "head":
                return
            config = alembic_config()
            config.attributes["connection"] = connection
            with connection.begin():
                command.upgrade(config, revision)
    finally:
        if isinstance(database, str):
            engine.dispose()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Keyed by schema, so databases sharing a server (or tests sharing one) do not queue.
            key = text("SELECT hashtext('plugway-migrations:' || current_schema())")
            lock_id = connection.execute(key).scalar_one()
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        with engine.connect() as connection:
            yield connection
        return
    import fcntl

    with open(f"{os.path.abspath(database)}.migrate.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
