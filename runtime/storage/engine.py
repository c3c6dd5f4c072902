"""Database engines: SQLite for the embedded default, PostgreSQL in production.

An SQLite file's directory must exist: a misspelt path would otherwise
silently start an empty database (keys "gone", budgets reset), so plugway
refuses it with a clear message instead of creating directories.

Engines hide statement parameters from error messages and logs: a failed
insert must never print a key's hash or a customer's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeoutError
from sqlmodel import create_engine

from runtime.storage.urls import mask_url

# libpq waits forever for an unanswered connection by default.
POSTGRES_CONNECT_TIMEOUT_S = 10
# What a database that cannot be reached raises: refused or dropped connections, an exhausted pool.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, SqlAlchemyTimeoutError)


class DatabaseUnavailable(Exception):
    """The configured database cannot be used; the message names ``database_url`` (password masked) and why."""


def sqlite_file(url: str | URL) -> Path | None:
    """The absolute path of an SQLite database file; None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def describe(url: str | URL) -> str:
    """``database_url <url>`` with the password masked, to start a message with."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return f"database_url {mask_url(text)}"


def failure_reason(exc: BaseException) -> str:
    """The driver's own one-line account of a database error, without SQLAlchemy's statement dump."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    reason = lines[0] if lines else type(original).__name__
    return reason.removeprefix("connection failed: ")


def _check_sqlite_directory(url: str) -> None:
    file = sqlite_file(url)
    if file is not None and not file.parent.is_dir():
        raise DatabaseUnavailable(f"{describe(url)}: directory {file.parent} does not exist (create it, or correct the path)")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        _check_sqlite_directory(url)
    else:
        kwargs.update(pool_size=10, max_overflow=20)
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the worker and the gateway read while usage is being written.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine
