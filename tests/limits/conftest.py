"""Real Redis for the limiter tests.

Two sources: the machine's shared Redis (``PLUGWAY_TEST_REDIS_URL``, default
127.0.0.1:6379) for behaviour tests, each under its own key prefix and never
flushed; and a private ``redis-server`` subprocess per fault test, which the
test may kill, freeze (SIGSTOP) and restart on the same port.

Missing Redis skips locally but fails under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
import redis
from limits_redis_server import RedisServer, free_port

SHARED_REDIS_URL = os.environ.get("PLUGWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: Redis is required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        _missing(f"no Redis at {SHARED_REDIS_URL} ({exc}); set PLUGWAY_TEST_REDIS_URL")
    finally:
        client.close()
    return SHARED_REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A prefix no other test or engineer uses; its keys are deleted afterwards."""
    prefix = f"plugway-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server binary not found on PATH")
        raise AssertionError("unreachable")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
