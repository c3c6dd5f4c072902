"""PostgreSQL unreachable for a while: requests that need it get 503 with Retry-After in their
route's envelope (never a 500), a stream already running still ends properly, and its usage
is written once the database is back.

The gateway reaches the real PostgreSQL through a loopback TCP proxy the test stops and restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from runtime.storage.usage import UsageNotWritten, UsageWriter
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.tcp_proxy import TcpProxy
from tests.support import Gateways, wait_until

BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield proxy
    proxy.close()


def _through(postgres_url: str, proxy: TcpProxy) -> str:
    return make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)


def _chat(base_url: str, key: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", json={**BODY, **body}, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_requests_get_503_while_the_database_is_unreachable_and_a_running_stream_still_ends(
    servers: Gateways, upstream: FakeOpenAI, postgres_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    server = servers.start(database_url=_through(postgres_url, proxy))
    known = server.mint("bare")
    unseen = server.mint("bare")  # never used before the outage: its lookup needs the database
    upstream.responder = lambda body: Reply(text="one two three four five six", prompt_tokens=3, completion_tokens=6, chunk_delay_s=0.1)
    assert _chat(server.base_url, known).status_code == 200

    with httpx.Client(timeout=30) as client, client.stream(
        "POST", f"{server.base_url}/chat/completions", json={**BODY, "stream": True}, headers={"Authorization": f"Bearer {known}"}
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert first != "data: [DONE]"
        proxy.stop()
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest and rest[-1] == "data: [DONE]"

    refused = _chat(server.base_url, unseen)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "database_unavailable"
    assert int(refused.headers["Retry-After"]) >= 1
    messages = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": unseen, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert messages.status_code == 503
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "api_error"
    assert "Retry-After" in messages.headers
    report = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {known}"}, timeout=30)
    assert report.status_code == 503 and report.json()["error"]["code"] == "database_unavailable"

    proxy.start()

    def answered() -> bool:
        again = _chat(server.base_url, unseen)
        assert again.status_code in (200, 503), again.text
        return again.status_code == 200

    wait_until(answered, "a request is answered once the database is back", within_s=30)
    # The stream's usage row was kept while the database was away and is written now.

    def usage_of_three() -> dict[str, Any] | None:
        server.flush_usage()
        usage: dict[str, Any] = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {known}"}, timeout=30).json()
        return usage if usage.get("total_requests") == 3 else None

    usage = wait_until(usage_of_three, "the three requests' usage written", within_s=30)
    assert usage["total_requests"] == 3  # the first request, the stream, and the one after the outage


async def test_usage_whose_commit_went_through_as_the_connection_broke_is_not_written_twice(postgres_url: str, proxy: TcpProxy, tmp_path: Path) -> None:
    """The writer cannot tell a commit the database carried out from one it never got; written
    again after such a failure, the batch leaves out the rows the database holds (by write id)."""
    engine = make_engine(_through(postgres_url, proxy))
    direct = make_engine(postgres_url)
    upgrade(direct)
    writer = UsageWriter(engine, flush_interval_s=60, spill_path=tmp_path / "unwritten.jsonl")  # never the working directory

    def rows() -> int:
        with direct.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM usage_records")).scalar_one())

    try:
        for request in ("r1", "r2"):
            writer.record(request_id=request, organisation_id="acme", model="gpt-test", total_tokens=10)
        proxy.mute_replies_after(b"COMMIT")
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.to_thread(wait_until, proxy.muted.is_set, "the commit sent")
        await asyncio.to_thread(wait_until, lambda: rows() == 2, "the commit carried out")
        proxy.stop()  # the connection breaks before the client hears of it
        with pytest.raises(UsageNotWritten):
            await flushing
        assert writer.backlog() == 2  # as far as the writer knows, nothing was written
        proxy.start()
        await writer.flush()
        assert rows() == 2 and writer.backlog() == 0
        writer.record(request_id="r3", organisation_id="acme", model="gpt-test", total_tokens=10)
        await writer.flush()
        assert rows() == 3
    finally:
        engine.dispose()
        direct.dispose()
