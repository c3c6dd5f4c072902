"""Shutting the gateway down: ``Gateway.aclose`` closes every part even when one of them fails to close."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

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
from tests.support import make_settings
from tests.support import test_plugins as loaded_plugins

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


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
