"""Issue 9, what the review found untested: throttling across fallbacks (17) and shutdown (5).

17. A provider's 429 reaches the client as 429 ``rate_limit_exceeded`` only after the
    model's fallbacks were tried: a fallback that answers serves the request; when every
    provider throttles the client gets the shortest ``Retry-After`` (the router's
    ``_give_up``); throttling mixed with another failure is ``502 upstream_unavailable``.
    Throttling never opens a breaker, so the next request still goes to the primary.
5.  ``Gateway.aclose`` closes every part even when one of them fails to close.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import create_engine, text

from runtime.gateway import Gateway
from runtime.plugin_host.isolation import run_isolated
from runtime.providers.openai import OpenAIProvider
from runtime.request import RouteLog
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.limits.limits_redis_server import RedisServer
from tests.mcp.mcp_helpers import TAG_ENV, TEST_SERVER, eventually, process_alive, tagged_processes
from tests.support import UPSTREAM_KEY, GatewayServer, make_settings
from tests.support import test_plugins as loaded_plugins

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


# -- 17: a 429 after the fallbacks were tried -----------------------------------------------------------


@pytest.fixture
def backup() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fallback_gateway(tmp_path: Path, upstream: FakeOpenAI, backup: FakeOpenAI) -> Iterator[GatewayServer]:
    """``gpt-test`` on the primary upstream, falling back to ``gpt-backup`` on a second upstream.

    The primary's breaker opens after a single counted failure: if throttling counted, one
    429 would be enough to stop the primary being tried.
    """

    def provider(provider_id: str, server: FakeOpenAI, **options: object) -> dict[str, object]:
        return {"id": provider_id, "kind": "openai", "base_url": server.base_url, "api_key": UPSTREAM_KEY,
                "timeout_s": 10, "max_retries": 0, **options}

    settings = make_settings(
        tmp_path,
        upstream.base_url,
        providers=[provider("primary", upstream, breaker_failures=1, breaker_cooldown_s=600), provider("backup", backup)],
        models=[
            {"id": "gpt-test", "provider": "primary", "fallbacks": ["gpt-backup"]},
            {"id": "gpt-backup", "provider": "backup"},
        ],
        organisations=[{"id": "bare"}],
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


def _client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0, timeout=20)


def _throttled(retry_after: str) -> Reply:
    return Reply(status=429, error_message="Rate limit reached for gpt-4o-mini", headers={"retry-after": retry_after})


def _primary_is_still_tried(client: openai.OpenAI, upstream: FakeOpenAI, backup: FakeOpenAI) -> None:
    """The primary's breaker stayed closed: the next request is sent to it, and it serves it."""
    before_primary, before_backup = len(upstream.requests), len(backup.requests)
    upstream.enqueue(Reply(text="from the primary"))
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "from the primary"
    assert len(upstream.requests) == before_primary + 1
    assert len(backup.requests) == before_backup


def test_a_throttled_primary_falls_back_and_the_fallback_serves(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI
) -> None:
    client = _client(fallback_gateway)
    upstream.enqueue(_throttled("7"))
    backup.enqueue(Reply(text="from the backup"))
    reply = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER)
    assert reply.status_code == 200
    assert reply.parse().choices[0].message.content == "from the backup"
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("primary_wait", "backup_wait"), [("7", "3"), ("3", "7")])
def test_when_every_provider_throttles_the_client_gets_429_with_the_shortest_retry_after(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI, stream: bool, primary_wait: str, backup_wait: str
) -> None:
    # Both orders: the shortest wait wins, not the first or the last provider's.
    client = _client(fallback_gateway)
    upstream.enqueue(_throttled(primary_wait))
    backup.enqueue(_throttled(backup_wait))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER, stream=stream)
    assert info.value.status_code == 429
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert info.value.response.headers["retry-after"] == "3"
    # Both were tried, once each: the 429 came after the fallback, not instead of it.
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)


def test_throttling_mixed_with_a_failing_fallback_is_502_upstream_unavailable(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI
) -> None:
    client = _client(fallback_gateway)
    upstream.enqueue(_throttled("7"))
    backup.enqueue(Reply(status=500, error_message="backup is down"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    # It failed over already: the SDKs must not retry on top of that.
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in info.value.response.headers
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)


# -- 5: Gateway.aclose closes every part even when one fails ------------------------------------------------


def _gateway_clients(server: RedisServer) -> int:
    """Clients of the private Redis (from ``own_redis``), other than the one asking."""
    with redis.Redis(port=server.port) as probe:
        return len(probe.client_list()) - 1


async def test_aclose_closes_every_part_when_one_fails_to_close(
    tmp_path: Path,
    upstream: FakeOpenAI,
    own_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The part that fails, the first one aclose closes: telemetry. In multiprocess mode it removes
    # this process's live-gauge files when it closes; here one of them cannot be removed (a
    # directory stands in its place), so prometheus-client's mark_process_dead raises OSError.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    tag = uuid.uuid4().hex
    settings = make_settings(
        tmp_path,
        upstream.base_url,
        plugins=[{"id": "remote", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "env": {TAG_ENV: tag}}}],
        redis_url=own_redis.url,
        # Nothing is written before aclose: its final flush must still run.
        usage={"flush_interval_s": 3600},
    )
    gateway = await Gateway.create(settings, plugins=loaded_plugins())
    closed = False
    try:
        assert gateway.telemetry.metrics is not None and gateway.telemetry.metrics.multiprocess
        # Every part in use: an MCP server process, a Redis connection, a provider's HTTP
        # session, a tool worker process, a buffered usage row and a pooled database connection.
        mcp_pids = await eventually(lambda: tagged_processes(tag))
        assert await gateway.limiter.ping()
        assert _gateway_clients(own_redis) >= 1
        upstream.enqueue(Reply(text="ok"))
        model = gateway.router.model("gpt-test")
        assert model is not None
        await gateway.router.chat(model, {"messages": USER}, RouteLog())
        provider = gateway.router.providers["upstream"]
        assert isinstance(provider, OpenAIProvider) and provider._http._session is not None
        session = provider._http._session
        assert not session.closed
        worker_pid = await run_isolated(os.getpid)
        assert worker_pid != os.getpid() and process_alive(worker_pid)
        gateway.usage.record(request_id="req-at-shutdown", organisation_id="acme", model="gpt-test")
        assert gateway.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
        (metrics_dir / f"gauge_livesum_{os.getpid()}.db").mkdir()

        with caplog.at_level(logging.ERROR, logger="plugway"):
            await gateway.aclose()  # must not raise
        closed = True
    finally:
        if not closed:
            await gateway.aclose()

    # The failure happened, and was logged.
    failures = [r for r in caplog.records if "closing the telemetry failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], OSError)
    # Every later part was still closed.
    assert await eventually(lambda: _gateway_clients(own_redis) == 0)
    reader = create_engine(gateway.engine.url)
    try:
        with reader.connect() as conn:
            written = conn.execute(text("SELECT count(*) FROM usage_records WHERE request_id = 'req-at-shutdown'")).scalar()
    finally:
        reader.dispose()
    assert written == 1
    assert await eventually(lambda: not any(process_alive(pid) for pid in mcp_pids))
    assert tagged_processes(tag) == []
    assert session.closed
    assert await eventually(lambda: not process_alive(worker_pid))
    assert gateway.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
