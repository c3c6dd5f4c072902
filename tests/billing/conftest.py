"""Real databases (a SQLite file, a private schema in the shared PostgreSQL) and real Redis
(the shared server under unique key ids, or a private redis-server the test may kill).

A missing PostgreSQL or Redis skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.services import fresh_database
from tests.support import GatewayServer, make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path, prefix="billing")


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("postgresql", tmp_path, prefix="billing")


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
def servers(
    tmp_path: Path, upstream: FakeOpenAI, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Servers]:
    if "database_url" in request.fixturenames:
        # Set up first so it is torn down last: gateways stop (and write their usage) before their schema is dropped.
        request.getfixturevalue("database_url")
    # A PostgreSQL gateway saves usage it cannot write in its working directory: never the repository.
    monkeypatch.chdir(tmp_path)
    pool = Servers(tmp_path, upstream)
    yield pool
    pool.stop_all()
