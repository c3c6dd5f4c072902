from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.limits.limits_redis_server import RedisServer, free_port
from tests.services import missing, shared_redis_url
from tests.support import Gateways, GatewayServer


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis (skipped locally when absent, a failure under CI=true)."""
    return shared_redis_url()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port, which the test may kill, freeze and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server binary not found on PATH")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
def gateways(tmp_path: Path, upstream: FakeOpenAI, request: pytest.FixtureRequest) -> Iterator[Gateways]:
    """Start gateways with ``gateways.start(**options)`` (on the fake upstream, in tmp_path); all stop after the test."""
    if "database_url" in request.fixturenames:
        # Set up first so it is torn down last: gateways stop (and write their usage) before their schema is dropped.
        request.getfixturevalue("database_url")
    with Gateways(tmp_path, upstream.base_url) as started:
        yield started


@pytest.fixture
def gateway(gateways: Gateways, request: pytest.FixtureRequest) -> GatewayServer:
    """The gateway on the fake upstream; tests tune it with @pytest.mark.gateway(...)."""
    marker = request.node.get_closest_marker("gateway")
    return gateways.start(**(dict(marker.kwargs) if marker else {}))


@pytest.fixture
def client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=20)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gateway(**options): settings for the gateway fixture")
