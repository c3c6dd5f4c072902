"""Every read from an upstream is bounded (issue 21): an endless line, an endless body, a slow drip.

The upstream is a raw TCP fake that counts what it sends; the gateway must answer
the client properly (a 502 envelope, or an SSE error event that ends the stream)
and stop reading: the fake sees the connection closed having sent little more
than the bound (plus what the kernel's socket buffers hold), where an unbounded
gateway reads until the fake gives up at 64 MiB.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import openai
import orjson
import pytest

from runtime.providers.http import retry_after
from tests.fakes.misbehaving_upstream import (
    Behaviour,
    MisbehavingUpstream,
    endless_json_body,
    endless_line_stream,
    slow_drip_json_body,
    slow_drip_stream,
)
from tests.support import Gateways, GatewayServer

MIB = 1024 * 1024
# What loopback's socket buffers can hold beyond what the gateway read, with room to spare.
BUFFERED = 16 * MIB
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def start(gateways: Gateways) -> Iterator[Any]:
    upstreams: list[MisbehavingUpstream] = []

    def launch(behaviour: Behaviour, **bounds: Any) -> tuple[GatewayServer, MisbehavingUpstream]:
        upstream = MisbehavingUpstream(behaviour).start()
        upstreams.append(upstream)
        provider = {"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test", "max_retries": 0, "timeout_s": 10, **bounds}
        return gateways.start(upstream_url=upstream.base_url, providers=[provider]), upstream

    yield launch
    gateways.stop_all()  # before the upstreams they talk to
    for upstream in upstreams:
        upstream.stop()


def client_of(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0, timeout=60)


def sse_events(server: GatewayServer) -> list[Any]:
    """A streamed request's data events, read whole with a plain HTTP client."""
    events: list[Any] = []
    body = {"model": "gpt-test", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {server.mint('bare')}"}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def test_an_endless_non_streamed_body_is_a_502_and_reading_stops_at_the_size_cap(start: Any) -> None:
    server, upstream = start(endless_json_body(), max_response_bytes=MIB)
    with pytest.raises(openai.APIStatusError) as info:
        client_of(server).chat.completions.create(model="gpt-test", messages=HELLO)
    assert info.value.status_code == 502
    error = info.value.body  # the SDK hands over the envelope's "error"
    assert isinstance(error, dict)
    assert error["code"] == "upstream_unavailable" and "larger than 1048576 bytes" in error["message"]
    (connection,) = upstream.wait_for_connections(1)
    assert connection.closed_by_peer and connection.sent < MIB + BUFFERED


def test_an_endless_stream_line_is_a_502_before_the_first_chunk(start: Any) -> None:
    server, upstream = start(endless_line_stream(), max_event_bytes=MIB)
    with pytest.raises(openai.APIStatusError) as info:
        list(client_of(server).chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    assert info.value.status_code == 502
    assert "stream event longer than 1048576 bytes" in info.value.body["message"]  # type: ignore[index]
    (connection,) = upstream.wait_for_connections(1)
    assert connection.closed_by_peer and connection.sent < MIB + BUFFERED


def test_an_endless_line_mid_stream_ends_the_clients_stream_with_an_error_event(start: Any) -> None:
    server, upstream = start(endless_line_stream(after_chunks=2), max_event_bytes=MIB)
    events = sse_events(server)
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1] if e["choices"]][-2:] == ["word0 ", "word1 "]
    assert events[-1]["error"]["code"] == "upstream_unavailable"
    assert "[DONE]" not in events
    (connection,) = upstream.wait_for_connections(1)
    assert connection.closed_by_peer and connection.sent < MIB + BUFFERED


def test_an_abandoned_stream_stops_reading_an_endless_line(start: Any) -> None:
    server, upstream = start(endless_line_stream(after_chunks=1), max_event_bytes=MIB)
    body = {"model": "gpt-test", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {server.mint('bare')}"}, timeout=60) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert "word0" in first
    # The client is gone; the gateway keeps reading to learn the usage, within the event bound.
    (connection,) = upstream.wait_for_connections(1)
    assert connection.closed_by_peer and connection.sent < MIB + BUFFERED


def test_a_slowly_dripped_body_is_cut_by_the_total_timeout(start: Any) -> None:
    server, upstream = start(slow_drip_json_body(interval_s=0.005), timeout_s=0.5)
    with pytest.raises(openai.APIStatusError) as info:
        client_of(server).chat.completions.create(model="gpt-test", messages=HELLO)
    assert info.value.status_code == 502
    assert "timed out" in info.value.body["message"]  # type: ignore[index]
    (connection,) = upstream.wait_for_connections(1)
    # 0.5 s at one byte every 5 ms is about 100 bytes; an idle timeout alone never fires.
    assert connection.closed_by_peer and connection.sent < 2000


def test_a_slowly_dripped_stream_is_cut_by_max_stream_s(start: Any) -> None:
    server, upstream = start(slow_drip_stream(interval_s=0.005), max_stream_s=0.5)
    events = sse_events(server)
    assert any(e["choices"] and e["choices"][0]["delta"].get("content") == "drip " for e in events[:-1])
    assert events[-1]["error"]["code"] == "upstream_unavailable" and "timed out" in events[-1]["error"]["message"]
    (connection,) = upstream.wait_for_connections(1)
    # 0.5 s of one small chunk every 5 ms: about 100 chunks of some 150 bytes.
    assert connection.closed_by_peer and connection.sent < 200_000


def test_retry_after_reads_milliseconds_seconds_and_http_dates() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"retry-after-ms": "soon", "retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    in_a_minute = formatdate(time.time() + 60, usegmt=True)
    assert 50 < (retry_after({"retry-after": in_a_minute}) or 0) <= 60
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
