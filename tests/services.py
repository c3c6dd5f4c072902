"""The real services the tests use: the machine's PostgreSQL and Redis.

A missing service skips its tests locally, with the reason, and fails them
under ``CI=true``: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("PLUGWAY_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PLUGWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this service is required)")
    pytest.skip(reason)


def _admin_url() -> str:
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


_pg_checked: list[str | None] = []


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (checked once per session), or None."""
    if not _pg_checked:
        try:
            with psycopg.connect(_admin_url(), connect_timeout=3):
                _pg_checked.append(None)
        except Exception as exc:  # any failure means: no usable PostgreSQL here
            _pg_checked.append(f"no PostgreSQL at {PG_URL}: {exc}".splitlines()[0])
    return _pg_checked[0]


def fresh_database(kind: str, tmp_path: Path, *, prefix: str = "test") -> Iterator[str]:
    """Yield the URL of an empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{prefix}-{secrets.token_hex(3)}.db'}"
        return
    problem = postgres_problem()
    if problem:
        missing(problem)
    # Other test runs share this database: each test gets a schema of its own.
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def shared_redis_url() -> str:
    """The machine's Redis, after checking it answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing(f"no Redis at {REDIS_URL} ({exc}); set PLUGWAY_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL
