"""Opening the database: an engine (``runtime.storage.engine``) with the schema at the latest revision."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from runtime.storage import models  # noqa: F401  (registers the tables)
from runtime.storage.engine import (
    OUTAGE_ERRORS,
    POSTGRES_CONNECT_TIMEOUT_S,
    DatabaseUnavailable,
    _check_sqlite_directory,
    describe,
    failure_reason,
    make_engine,
    sqlite_file,
)

__all__ = [
    "OUTAGE_ERRORS",
    "POSTGRES_CONNECT_TIMEOUT_S",
    "DatabaseUnavailable",
    "create_schema",
    "describe",
    "failure_reason",
    "make_engine",
    "open_database",
    "sqlite_file",
]


def create_schema(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (safe when several processes start at once)."""
    from runtime.storage.migrations import upgrade  # Alembic loads only when a database is opened

    upgrade(engine)


def open_database(url: str, *, create: bool = True) -> Engine | None:
    """An engine on ``url`` with the schema at the latest revision.

    With ``create=False`` (commands that only read or change existing rows),
    a missing SQLite file is not created: the answer is None. Any failure is
    a :class:`DatabaseUnavailable` phrased for the operator.
    """
    _check_sqlite_directory(url)
    file = sqlite_file(url)
    if not create and file is not None and not file.exists():
        return None
    engine = make_engine(url)
    try:
        try:
            with engine.connect():
                pass
        except SQLAlchemyError as exc:
            verb = "cannot open" if file is not None else "cannot connect"
            raise DatabaseUnavailable(f"{describe(url)}: {verb} ({failure_reason(exc)})") from None
        try:
            create_schema(engine)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(
                f"{describe(url)}: cannot bring the schema up to date ({failure_reason(exc)})"
            ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine
