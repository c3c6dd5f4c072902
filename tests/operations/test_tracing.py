"""Traces through the SDK's in-memory exporter: the request span, a child per upstream round and per
tool execution, MCP calls, the WhatsApp path, and traceparent on every outgoing call."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.e2e.conftest import anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic, fake_anthropic_server
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.threaded import ThreadedServer
from tests.operations import trace_mcp_server
from tests.operations.conftest import (
    ops_settings,
    post_whatsapp,
    scrape,
    value,
)
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer, make_settings, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACE_SERVER = Path(trace_mcp_server.__file__)

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name


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
def traced(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, mcp_http: str, spans: InMemorySpanExporter, gateways: Gateways) -> GatewayServer:
    plugins = [
        {"id": "calculator"},
        {"id": "testkit"},
        {"id": "tracestdio", "mcp": {"command": [sys.executable, str(TRACE_SERVER)]}},
        {"id": "tracehttp", "mcp": {"url": mcp_http}},
    ]
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, plugins=plugins, tracing={"enabled": True, "exporter": "none"})
    return gateways.start(settings, run_worker=True)


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


def test_tracing_off_sends_no_traceparent_and_records_nothing(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, spans: InMemorySpanExporter, gateways: Gateways) -> None:
    server = gateways.start(ops_settings(tmp_path, upstream.base_url, graph.base_url))
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "1+1"})]), Reply(text="2"))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "1+1"}], extra_headers={"traceparent": INCOMING})
    server.stop()
    assert all("traceparent" not in headers for headers in upstream.headers)
    assert not [span for span in spans.get_finished_spans() if span.name.startswith(("POST", "chat", "execute_tool"))]


def test_capture_content_puts_messages_on_spans(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, spans: InMemorySpanExporter, gateways: Gateways) -> None:
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, tracing={"enabled": True, "exporter": "none", "capture_content": True})
    server = gateways.start(settings)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]), Reply(text="forty-two"))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "what is 6*7?"}])
    finished = finished_spans(spans, "POST /v1/chat/completions", 1)
    rounds: list[Any] = named(finished, "chat gpt-4o-mini")
    assert any("what is 6*7?" in span.attributes["gen_ai.input.messages"] for span in rounds)
    assert any("forty-two" in span.attributes["gen_ai.output.messages"] for span in rounds)
    (tool,) = [span for span in finished if span.name == "execute_tool calculator__evaluate"]
    assert "6*7" in tool.attributes["gen_ai.tool.call.arguments"] and "42" in tool.attributes["gen_ai.tool.call.result"]


# -- beyond chat completions: embeddings, endpoints, Responses and Messages (translated and native), an operator's question ---

CALC = ("calculator__evaluate", {"expression": "6*7"})
BOOM = ("testkit__boom", {})


@pytest.fixture(scope="module")
def traced_front_doors(upstream_server: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One gateway with tracing on, an OpenAI-kind and an Anthropic-kind provider, and an endpoint."""
    providers = [
        {"id": "upstream", "kind": "openai", "base_url": upstream_server.base_url, "api_key": UPSTREAM_KEY, "max_retries": 0},
        anthropic_provider("claude", fake_anthropic_server.base_url),
    ]
    models = [
        {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini"},
        {"id": "embed-small", "provider": "upstream", "upstream_model": "text-embedding-3-small", "embeddings": True},
        {"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"},
    ]
    tools = [{"id": "calculator"}, {"id": "testkit"}]
    organisations = [
        {"id": "acme", "plugins": tools, "endpoints": [{"slug": "support", "model": "gpt-test", "plugins": ["calculator"], "stream": False}]},
        {"id": "plain"},
        {"id": "oncall", "plugins": tools},  # the operator's question: only its own series
    ]
    settings = make_settings(
        tmp_path_factory.mktemp("traced-front-doors"), upstream_server.base_url, providers=providers, models=models,
        organisations=organisations, tracing={"enabled": True, "exporter": "none"},
    )
    with Gateways() as started:
        yield started.start(settings)


def request_span(spans: InMemorySpanExporter, name: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one request span called ``name``, and every span of its trace."""
    finished = finished_spans(spans, name, 1)
    (request,) = named(finished, name)
    return request, [span for span in finished if span.context.trace_id == request.context.trace_id]


def test_embeddings_span_is_a_client_child_carried_upstream(traced_front_doors: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced_front_doors.base_url, api_key=traced_front_doors.mint("acme"), max_retries=0)
    client.embeddings.create(model="embed-small", input=["the cat sat", "on the mat"], dimensions=8, extra_headers={"traceparent": INCOMING})
    request, trace = request_span(spans, "POST /v1/embeddings")
    assert hex_id(request.context.trace_id, 32) == TRACE_ID
    assert request.attributes["plugway.organisation"] == "acme" and request.attributes["plugway.model"] == "embed-small"
    (embedding,) = named(trace, "embeddings text-embedding-3-small")
    assert embedding.kind is SpanKind.CLIENT and parent_of(embedding) == request.context.span_id
    assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
    assert embedding.attributes["gen_ai.request.model"] == "text-embedding-3-small"
    assert embedding.attributes["gen_ai.embeddings.dimension.count"] == 8
    assert embedding.attributes["gen_ai.usage.input_tokens"] == 6
    assert traceparent_parent(upstream.headers[0]["traceparent"]) == (TRACE_ID, hex_id(embedding.context.span_id, 16))



def rounds_under(trace: list[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    spans = [span for span in named(trace, name) if parent_of(span) == parent.context.span_id]
    return sorted(spans, key=lambda span: span.attributes["plugway.round"])


def tools_under(trace: list[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {span.attributes["gen_ai.tool.name"]: span for span in trace if span.name.startswith("execute_tool ") and parent_of(span) == parent.context.span_id}


def test_an_endpoint_call_has_its_rounds_and_tools(traced_front_doors: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    upstream.enqueue(Reply(tool_calls=[CALC], prompt_tokens=20, completion_tokens=4), Reply(text="42", prompt_tokens=30, completion_tokens=2))
    response = httpx.post(
        f"{traced_front_doors.url}/api/acme/support", json={"message": "6*7?"},
        headers={"Authorization": f"Bearer {traced_front_doors.mint('acme')}", "traceparent": INCOMING}, timeout=20,
    )
    assert response.status_code == 200, response.text
    request, trace = request_span(spans, "POST /api/{organisation}/{slug}")
    assert hex_id(request.context.trace_id, 32) == TRACE_ID
    assert request.attributes["gen_ai.usage.input_tokens"] == 50 and request.attributes["plugway.rounds"] == 2
    assert request.attributes["plugway.organisation"] == "acme" and request.attributes["plugway.model"] == "gpt-test"
    rounds = rounds_under(trace, request, "chat gpt-4o-mini")
    assert [span.attributes["plugway.round"] for span in rounds] == [1, 2]
    (tool,) = tools_under(trace, request).values()
    assert tool.attributes["gen_ai.tool.name"] == "calculator__evaluate" and tool.attributes["plugway.tool.outcome"] == "ok"
    assert rounds[0].end_time <= tool.start_time and tool.end_time <= rounds[1].start_time
    assert [traceparent_parent(headers["traceparent"]) for headers in upstream.headers] == [(TRACE_ID, hex_id(span.context.span_id, 16)) for span in rounds]


def test_responses_rounds_and_tool_spans(traced_front_doors: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced_front_doors.base_url, api_key=traced_front_doors.mint("acme"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[CALC, BOOM]), Reply(text="42, and the other tool broke"))
    response = client.responses.create(model="gpt-test", input="6*7?", extra_headers={"traceparent": INCOMING})
    assert response.status == "completed"
    request, trace = request_span(spans, "POST /v1/responses")
    assert hex_id(request.context.trace_id, 32) == TRACE_ID
    assert request.attributes["plugway.organisation"] == "acme" and request.attributes["plugway.source"] == "responses"
    rounds = rounds_under(trace, request, "chat gpt-4o-mini")
    assert [span.attributes["plugway.round"] for span in rounds] == [1, 2]
    tools = tools_under(trace, request)
    assert set(tools) == {"calculator__evaluate", "testkit__boom"}
    assert tools["testkit__boom"].status.status_code is StatusCode.ERROR and tools["testkit__boom"].attributes["error.type"] == "tool_failed"
    assert [traceparent_parent(headers["traceparent"]) for headers in upstream.headers] == [(TRACE_ID, hex_id(span.context.span_id, 16)) for span in rounds]


def test_messages_on_an_anthropic_provider_carry_each_round_upstream(traced_front_doors: GatewayServer, fake_anthropic: FakeAnthropic, spans: InMemorySpanExporter) -> None:
    """Translated (the organisation's tools run: a loop of rounds) on an Anthropic-kind provider.

    The anthropic SDK traces its own calls and sends its span as traceparent: the gateway's request span is its child."""
    fake_anthropic.script([
        ClaudeReply(tool_use=[CALC], input_tokens=40, output_tokens=6),
        ClaudeReply(text="42.", input_tokens=50, output_tokens=2),
    ])
    client = anthropic.Anthropic(base_url=traced_front_doors.url, api_key=traced_front_doors.mint("acme"), max_retries=0)
    client.messages.create(model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "6*7?"}])
    request, trace = request_span(spans, "POST /v1/messages")
    trace_id = hex_id(request.context.trace_id, 32)
    rounds = rounds_under(trace, request, "chat claude-haiku-4-5")
    assert [span.attributes["plugway.round"] for span in rounds] == [1, 2]
    for span in rounds:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["gen_ai.provider.name"] == "anthropic" and span.attributes["plugway.provider.id"] == "claude"
    assert (rounds[0].attributes["gen_ai.usage.input_tokens"], rounds[0].attributes["gen_ai.usage.output_tokens"]) == (40, 6)
    (tool,) = tools_under(trace, request).values()
    assert tool.attributes["gen_ai.tool.name"] == "calculator__evaluate"
    sent = [traceparent_parent(recorded.headers["traceparent"]) for recorded in fake_anthropic.requests]
    assert sent == [(trace_id, hex_id(span.context.span_id, 16)) for span in rounds]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_native_messages_get_a_round_span_carried_upstream(
    traced_front_doors: GatewayServer, fake_anthropic: FakeAnthropic, spans: InMemorySpanExporter, stream: bool
) -> None:
    """Native (no tools for this organisation: the client's body goes to Anthropic as it is): still one round span."""
    fake_anthropic.script([ClaudeReply(text="Plain answer.", input_tokens=9, output_tokens=3)])
    client = anthropic.Anthropic(base_url=traced_front_doors.url, api_key=traced_front_doors.mint("plain"), max_retries=0)
    arguments = {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.stream(**arguments) as streamed:  # type: ignore[arg-type]
            assert "".join(streamed.text_stream) == "Plain answer."
    else:
        client.messages.create(**arguments)  # type: ignore[arg-type]
    request, trace = request_span(spans, "POST /v1/messages")
    (round_span,) = rounds_under(trace, request, "chat claude-haiku-4-5")
    assert round_span.attributes["plugway.stream"] is stream
    assert round_span.attributes["gen_ai.provider.name"] == "anthropic"
    assert round_span.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert (round_span.attributes["gen_ai.usage.input_tokens"], round_span.attributes["gen_ai.usage.output_tokens"]) == (9, 3)
    assert round_span.attributes["gen_ai.response.model"] == "claude-haiku-4-5"
    (recorded,) = fake_anthropic.requests
    assert traceparent_parent(recorded.headers["traceparent"]) == (hex_id(request.context.trace_id, 32), hex_id(round_span.context.span_id, 16))


def test_which_tool_fails_for_whom_and_how_slow_the_model_is(traced_front_doors: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    """The issue's "done when": the dashboard's failing-tools panel, then one trace, answer the on-call question."""
    before = scrape(traced_front_doors.url)
    client = openai.OpenAI(base_url=traced_front_doors.base_url, api_key=traced_front_doors.mint("oncall"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[CALC, BOOM]), Reply(text="The calculator says 42; the other tool broke."))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "6*7?"}])
    after = scrape(traced_front_doors.url)

    # Which tool, for whom: the panel's query, evaluated on the scrape (grouped by its labels, outcome not ok).
    dashboard = json.loads((Path(__file__).parents[2] / "examples" / "grafana" / "plugway-dashboard.json").read_text())
    (expr,) = [target["expr"] for panel in dashboard["panels"] if panel["title"].startswith("Failing tools") for target in panel["targets"]]
    grouping = [label.strip() for label in re.search(r"sum by \(([^)]*)\)", expr).group(1).split(",")]  # type: ignore[union-attr]
    assert 'outcome!="ok"' in expr and "plugway_tool_calls_total" in expr
    failing = {
        tuple(dict(labels)[name] for name in grouping): count
        for (sample, labels), count in after.items()
        if sample == "plugway_tool_calls_total" and dict(labels)["outcome"] != "ok" and dict(labels)["organisation"] == "oncall"
    }
    assert grouping == ["plugin", "tool", "outcome", "organisation"]
    assert failing == {("testkit", "testkit__boom", "tool_failed", "oncall"): 1}
    assert value(after, "plugway_tool_calls_total", organisation="oncall", plugin="calculator", tool="calculator__evaluate", outcome="ok") == 1

    # One trace of that organisation's request: the failing tool's span, when it ran, and the rounds around it.
    finished = finished_spans(spans, "POST /v1/chat/completions", 1)
    (request,) = [span for span in named(finished, "POST /v1/chat/completions") if span.attributes["plugway.organisation"] == "oncall"]
    trace = [span for span in finished if span.context.trace_id == request.context.trace_id]
    (failed,) = [span for span in trace if span.name == "execute_tool testkit__boom"]
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "tool_failed"
    assert failed.attributes["plugway.plugin.id"] == "testkit" and parent_of(failed) == request.context.span_id
    assert failed.start_time is not None and request.start_time <= failed.start_time
    rounds = rounds_under(trace, request, "chat gpt-4o-mini")
    assert len(rounds) == 2 and all(span.end_time > span.start_time for span in rounds)
    assert {span.attributes["plugway.provider.id"] for span in rounds} == {"upstream"}
    # How slow the model behind it is: its upstream latency histogram (by the request span's plugway.model) got both rounds.
    model = request.attributes["plugway.model"]
    latency = "plugway_upstream_request_duration_seconds_count"
    assert value(after, latency, provider="upstream", model=model, outcome="ok") - value(before, latency, provider="upstream", model=model, outcome="ok") == 2
