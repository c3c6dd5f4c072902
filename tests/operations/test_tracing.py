"""Traces through the SDK's in-memory exporter: the request span, a child per upstream round and per
tool execution, MCP calls, the WhatsApp path, and traceparent on every outgoing call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.threaded import ThreadedServer
from tests.operations import trace_mcp_server
from tests.operations.conftest import WorkerGatewayServer, ops_settings, post_whatsapp, wait_until
from tests.support import GatewayServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACE_SERVER = Path(trace_mcp_server.__file__)


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent_parent(header: str) -> tuple[str, str]:
    """(trace id, parent span id) of a traceparent header."""
    _version, trace_id, parent_id, _flags = header.split("-")
    return trace_id, parent_id


@pytest.fixture
def mcp_http() -> Iterator[str]:
    server = ThreadedServer(trace_mcp_server.app(), name="trace MCP server", lifespan="on")
    port = server.start()
    yield f"http://127.0.0.1:{port}/mcp"
    server.stop()


@pytest.fixture
def traced(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, mcp_http: str, spans: InMemorySpanExporter) -> Iterator[GatewayServer]:
    plugins = [
        {"id": "calculator"},
        {"id": "testkit"},
        {"id": "tracestdio", "mcp": {"command": [sys.executable, str(TRACE_SERVER)]}},
        {"id": "tracehttp", "mcp": {"url": mcp_http}},
    ]
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, plugins=plugins, tracing={"enabled": True, "exporter": "none"})
    server = WorkerGatewayServer(settings).start()
    yield server
    server.stop()


def finished_spans(spans: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    wait_until(lambda: len(named(list(spans.get_finished_spans()), name)) >= count)
    return list(spans.get_finished_spans())


def test_request_round_and_tool_spans_continue_the_callers_trace(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("acme"), max_retries=0)
    upstream.enqueue(
        Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"}), ("testkit__boom", {})], prompt_tokens=20, completion_tokens=4),
        Reply(text="42", prompt_tokens=30, completion_tokens=2),
    )
    client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "6*7?"}], extra_headers={"traceparent": INCOMING}
    )
    finished = finished_spans(spans, "POST /v1/chat/completions", 1)

    (request,) = named(finished, "POST /v1/chat/completions")
    assert request.kind is SpanKind.SERVER
    assert hex_id(request.context.trace_id, 32) == TRACE_ID
    assert hex_id(parent_of(request) or 0, 16) == CLIENT_SPAN
    assert request.attributes["plugway.organisation"] == "acme"
    assert request.attributes["plugway.model"] == "gpt-test"
    assert request.attributes["gen_ai.usage.input_tokens"] == 50

    rounds = sorted(named(finished, "chat gpt-4o-mini"), key=lambda span: span.attributes["plugway.round"])
    assert [span.attributes["plugway.round"] for span in rounds] == [1, 2]
    for span in rounds:
        assert span.kind is SpanKind.CLIENT
        assert parent_of(span) == request.context.span_id
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["plugway.provider.id"] == "upstream"
    assert rounds[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert rounds[1].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert (rounds[0].attributes["gen_ai.usage.input_tokens"], rounds[0].attributes["gen_ai.usage.output_tokens"]) == (20, 4)
    assert rounds[1].attributes["gen_ai.response.model"] == "gpt-4o-mini"

    tools = {span.attributes["gen_ai.tool.name"]: span for span in finished if span.name.startswith("execute_tool ")}
    assert set(tools) == {"calculator__evaluate", "testkit__boom"}
    for span in tools.values():
        assert parent_of(span) == request.context.span_id
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert rounds[0].end_time <= span.start_time and span.end_time <= rounds[1].start_time
    assert tools["calculator__evaluate"].attributes["plugway.tool.outcome"] == "ok"
    assert tools["calculator__evaluate"].status.status_code is StatusCode.UNSET
    assert tools["testkit__boom"].attributes["plugway.tool.outcome"] == "tool_failed"
    assert tools["testkit__boom"].attributes["error.type"] == "tool_failed"
    assert tools["testkit__boom"].status.status_code is StatusCode.ERROR
    # Content stays off spans unless tracing.capture_content says otherwise.
    assert not any("6*7" in str(value) for span in finished for value in (span.attributes or {}).values())

    # Each provider request carried its own round span as parent.
    sent = [traceparent_parent(headers["traceparent"]) for headers in upstream.headers]
    assert sent == [(TRACE_ID, hex_id(span.context.span_id, 16)) for span in rounds]


def test_streamed_round_carries_its_span_upstream(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(text="streamed answer"))
    list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True))
    finished = finished_spans(spans, "POST /v1/chat/completions", 1)
    (request,) = named(finished, "POST /v1/chat/completions")
    (round_span,) = named(finished, "chat gpt-4o-mini")
    assert parent_of(round_span) == request.context.span_id
    assert round_span.attributes["plugway.stream"] is True
    assert round_span.attributes["gen_ai.usage.output_tokens"] == 7
    assert traceparent_parent(upstream.headers[0]["traceparent"]) == (hex_id(request.context.trace_id, 32), hex_id(round_span.context.span_id, 16))


def test_mcp_calls_carry_the_trace_over_stdio_and_http(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("acme"), max_retries=0)
    upstream.enqueue(
        Reply(tool_calls=[("tracestdio__trace_seen", {}), ("tracehttp__trace_seen", {})]),
        Reply(text="done"),
    )
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "trace"}])
    finished = finished_spans(spans, "POST /v1/chat/completions", 1)
    results = {m["tool_call_id"]: orjson.loads(m["content"]) for m in upstream.requests[1]["messages"] if m["role"] == "tool"}
    calls = {c["function"]["name"]: c["id"] for c in upstream.requests[1]["messages"][-3]["tool_calls"]}
    for plugin in ("tracestdio", "tracehttp"):
        (tool_span,) = [s for s in finished if s.name == f"execute_tool {plugin}__trace_seen"]
        (mcp_span,) = [s for s in finished if s.name == "MCP send tools/call trace_seen" and parent_of(s) == tool_span.context.span_id]
        seen = results[calls[f"{plugin}__trace_seen"]]
        # The server got the MCP call's own span as parent, in params._meta.
        assert traceparent_parent(seen["meta"]) == (hex_id(tool_span.context.trace_id, 32), hex_id(mcp_span.context.span_id, 16))
        if plugin == "tracehttp":
            assert seen["header"] == seen["meta"]


def test_whatsapp_reply_continues_the_webhook_trace(traced: GatewayServer, upstream: FakeOpenAI, graph: FakeGraphAPI, spans: InMemorySpanExporter) -> None:
    upstream.enqueue(Reply(text="Hi! How can I help?"))
    assert post_whatsapp(traced.url, "hello").status_code == 200
    wait_until(lambda: bool(graph.texts_to("15551234567")))
    finished = finished_spans(spans, "process whatsapp", 1)
    (webhook,) = named(finished, "POST /webhooks/whatsapp")
    (process,) = named(finished, "process whatsapp")
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == webhook.context.trace_id
    assert parent_of(process) == webhook.context.span_id
    assert process.attributes["plugway.whatsapp.app_id"] == "acme-support"
    (round_span,) = named(finished, "chat gpt-4o-mini")
    assert parent_of(round_span) == process.context.span_id
    sends = named(finished, "send whatsapp")
    assert sends and all(parent_of(span) == process.context.span_id for span in sends)
    assert traceparent_parent(upstream.headers[0]["traceparent"])[0] == hex_id(webhook.context.trace_id, 32)


def test_tracing_off_sends_no_traceparent_and_records_nothing(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, spans: InMemorySpanExporter) -> None:
    server = GatewayServer(ops_settings(tmp_path, upstream.base_url, graph.base_url)).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
        upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "1+1"})]), Reply(text="2"))
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "1+1"}], extra_headers={"traceparent": INCOMING})
    finally:
        server.stop()
    assert all("traceparent" not in headers for headers in upstream.headers)
    assert not [span for span in spans.get_finished_spans() if span.name.startswith(("POST", "chat", "execute_tool"))]


def test_capture_content_puts_messages_on_spans(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, spans: InMemorySpanExporter) -> None:
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, tracing={"enabled": True, "exporter": "none", "capture_content": True})
    server = GatewayServer(settings).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
        upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]), Reply(text="forty-two"))
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "what is 6*7?"}])
        finished = finished_spans(spans, "POST /v1/chat/completions", 1)
    finally:
        server.stop()
    rounds: list[Any] = named(finished, "chat gpt-4o-mini")
    assert any("what is 6*7?" in span.attributes["gen_ai.input.messages"] for span in rounds)
    assert any("forty-two" in span.attributes["gen_ai.output.messages"] for span in rounds)
    (tool,) = [span for span in finished if span.name == "execute_tool calculator__evaluate"]
    assert "6*7" in tool.attributes["gen_ai.tool.call.arguments"] and "42" in tool.attributes["gen_ai.tool.call.result"]
