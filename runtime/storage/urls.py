"""Database and Redis URLs: checked when the configuration loads, and shown without their password.

Used by the configuration's validators (so ``database_url: notaurl`` stops
start-up with one line) and by every message that names a URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DATABASE_URL_EXAMPLES = "sqlite:///path/to/plugway.db or postgresql+psycopg://user:password@host:5432/database"
REDIS_URL_EXAMPLES = "redis://host:6379/0, rediss://host:6380/0 or unix:///path/to/redis.sock"
MASK = "****"

_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@:]*):(?P<password>[^/?#]*)@")


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``****`` (``user:****@host``)."""
    return _PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", url, count=1)


def check_database_url(value: str) -> str:
    """The URL to use for ``value``, or ValueError saying what is wrong with it (password masked).

    ``postgresql://`` and ``postgres://`` mean the psycopg 3 driver plugway
    ships with (SQLAlchemy would otherwise look for psycopg2).
    """
    shown = mask_url(value)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(f"{shown!r} is not a database URL; use {DATABASE_URL_EXAMPLES}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return value
    if backend not in ("postgresql", "postgres"):
        raise ValueError(f"{shown!r}: plugway keeps its data in SQLite or PostgreSQL, not {backend}; use {DATABASE_URL_EXAMPLES}")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
        value = url.render_as_string(hide_password=False)
    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        raise ValueError(f"{shown!r}: the database driver '{url.get_driver_name()}' is not installed; use postgresql+psycopg://") from None
    except Exception:
        raise ValueError(f"{shown!r}: unknown database driver '{url.get_driver_name()}'; use postgresql+psycopg://") from None
    return value


def check_redis_url(value: str) -> str:
    """``value`` if redis-py can connect with it, else ValueError saying why (password masked)."""
    shown = mask_url(value)
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{shown!r} is not a Redis URL; use {REDIS_URL_EXAMPLES}")
    try:
        parts.port  # noqa: B018  (parsing the port is the check)
    except ValueError:
        raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{shown!r}: give the socket's path, as in unix:///path/to/redis.sock")
        return value
    if not parts.hostname:
        raise ValueError(f"{shown!r}: give a host, as in redis://host:6379/0")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError(f"{shown!r}: the database after the host must be a number, as in redis://host:6379/0")
    return value
