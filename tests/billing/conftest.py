"""Real databases (a SQLite file, a private schema in the shared PostgreSQL) and real Redis
(the shared server under unique key ids, or a private redis-server the test may kill).

A missing PostgreSQL or Redis skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.fakes.openai_server import FakeOpenAI
from tests.limits.limits_redis_server import RedisServer, free_port
from tests.support import GatewayServer, make_settings

PG_URL = os.environ.get("PLUGWAY_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PLUGWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: this service is required)")
    pytest.skip(reason)


def _admin_url() -> str:
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


_pg_checked: list[str | None] = []


def postgres_problem() -> str | None:
    if not _pg_checked:
        try:
            with psycopg.connect(_admin_url(), connect_timeout=3):
                _pg_checked.append(None)
        except Exception as exc:
            _pg_checked.append(f"no PostgreSQL at {PG_URL}: {exc}".splitlines()[0])
    return _pg_checked[0]


def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of an empty database: a new SQLite file or a new PostgreSQL schema (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'billing-{secrets.token_hex(3)}.db'}"
        return
    problem = postgres_problem()
    if problem:
        missing(problem)
    schema = f"billing_test_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("postgresql", tmp_path)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing(f"no Redis at {REDIS_URL} ({exc}); set PLUGWAY_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server binary not found on PATH")
        raise AssertionError("unreachable")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Servers:
    """Gateways started by a test, all stopped at its end."""

    def __init__(self, tmp_path: Path, upstream: FakeOpenAI) -> None:
        self.tmp_path = tmp_path
        self.upstream = upstream
        self.started: list[GatewayServer] = []

    def start(self, **options: Any) -> GatewayServer:
        server = GatewayServer(make_settings(self.tmp_path, self.upstream.base_url, **options)).start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def servers(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Servers]:
    pool = Servers(tmp_path, upstream)
    yield pool
    pool.stop_all()
