"""Real Redis for the limiter tests.

Two sources: the machine's shared Redis (``PLUGWAY_TEST_REDIS_URL``, default
127.0.0.1:6379) for behaviour tests, each under its own key prefix and never
flushed; and a private ``redis-server`` subprocess per fault test, which the
test may kill, freeze (SIGSTOP) and restart on the same port.

Missing Redis skips locally but fails under ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis


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


