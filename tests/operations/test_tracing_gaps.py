"""Traces beyond chat completions: /v1/embeddings, an endpoint call, /v1/responses and /v1/messages (translated
and native, on an Anthropic-kind provider), and an operator's question answered from metrics and one trace."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.e2e.conftest import anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic, fake_anthropic_server
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.operations.conftest import scrape, value
from tests.operations.test_tracing import (
    INCOMING,
    TRACE_ID,
    finished_spans,
    hex_id,
    named,
    parent_of,
    traceparent_parent,
)
from tests.support import UPSTREAM_KEY, GatewayServer, make_settings

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

CALC = ("calculator__evaluate", {"expression": "6*7"})
BOOM = ("testkit__boom", {})


@pytest.fixture(scope="module")
def traced(upstream_server: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
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
        tmp_path_factory.mktemp("traced"), upstream_server.base_url, providers=providers, models=models,
        organisations=organisations, tracing={"enabled": True, "exporter": "none"},
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


def request_span(spans: InMemorySpanExporter, name: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one request span called ``name``, and every span of its trace."""
    finished = finished_spans(spans, name, 1)
    (request,) = named(finished, name)
    return request, [span for span in finished if span.context.trace_id == request.context.trace_id]


def test_embeddings_span_is_a_client_child_carried_upstream(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("acme"), max_retries=0)
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


def test_an_endpoint_call_has_its_rounds_and_tools(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    upstream.enqueue(Reply(tool_calls=[CALC], prompt_tokens=20, completion_tokens=4), Reply(text="42", prompt_tokens=30, completion_tokens=2))
    response = httpx.post(
        f"{traced.url}/api/acme/support", json={"message": "6*7?"},
        headers={"Authorization": f"Bearer {traced.mint('acme')}", "traceparent": INCOMING}, timeout=20,
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


def test_responses_rounds_and_tool_spans(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("acme"), max_retries=0)
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


def test_messages_on_an_anthropic_provider_carry_each_round_upstream(traced: GatewayServer, fake_anthropic: FakeAnthropic, spans: InMemorySpanExporter) -> None:
    """Translated (the organisation's tools run: a loop of rounds) on an Anthropic-kind provider.

    The anthropic SDK traces its own calls and sends its span as traceparent: the gateway's request span is its child."""
    fake_anthropic.script([
        ClaudeReply(tool_use=[CALC], input_tokens=40, output_tokens=6),
        ClaudeReply(text="42.", input_tokens=50, output_tokens=2),
    ])
    client = anthropic.Anthropic(base_url=traced.url, api_key=traced.mint("acme"), max_retries=0)
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
    traced: GatewayServer, fake_anthropic: FakeAnthropic, spans: InMemorySpanExporter, stream: bool
) -> None:
    """Native (no tools for this organisation: the client's body goes to Anthropic as it is): still one round span."""
    fake_anthropic.script([ClaudeReply(text="Plain answer.", input_tokens=9, output_tokens=3)])
    client = anthropic.Anthropic(base_url=traced.url, api_key=traced.mint("plain"), max_retries=0)
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


def test_which_tool_fails_for_whom_and_how_slow_the_model_is(traced: GatewayServer, upstream: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    """The issue's "done when": the dashboard's failing-tools panel, then one trace, answer the on-call question."""
    before = scrape(traced.url)
    client = openai.OpenAI(base_url=traced.base_url, api_key=traced.mint("oncall"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[CALC, BOOM]), Reply(text="The calculator says 42; the other tool broke."))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "6*7?"}])
    after = scrape(traced.url)

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
