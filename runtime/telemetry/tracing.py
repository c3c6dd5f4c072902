"""OpenTelemetry traces, following the GenAI semantic conventions.

The request span is FastAPI's own HTTP server span (``POST /v1/chat/completions``:
FastAPI honours an incoming ``traceparent``); plugway adds under it:

- ``chat {model}`` (kind CLIENT), one per upstream round: ``gen_ai.operation.name``
  ``chat``, ``gen_ai.request.model``, ``gen_ai.provider.name`` (and the older
  ``gen_ai.system``), ``gen_ai.response.model``, ``gen_ai.response.id``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens``, ``plugway.round``, ``plugway.provider.id``. The provider
  call inside it carries its ``traceparent``;
- ``execute_tool {tool}`` (INTERNAL), one per tool execution:
  ``gen_ai.operation.name`` ``execute_tool``, ``gen_ai.tool.name``,
  ``gen_ai.tool.call.id``, ``plugway.plugin.id``, ``plugway.tool.outcome``
  (``error.type`` and an error status when it failed). An MCP tool's call
  appears under it as the MCP SDK's ``MCP send tools/call {tool}`` span, and
  the trace context travels to the server in ``params._meta`` (and, over
  streamable HTTP, as a ``traceparent`` header);
- ``embeddings {model}`` (CLIENT) for ``/v1/embeddings``;
- the WhatsApp path: the webhook's server span stores its ``traceparent`` with
  each queued message (in the ``raw`` column's JSON, key ``plugway_trace``);
  the worker's ``process whatsapp`` span (CONSUMER) continues that trace, and
  ``send whatsapp`` (CLIENT) spans cover the Graph API calls.

Prompts, answers, tool arguments and results go on spans only with
``tracing.capture_content: true``.

Off (the default) every hook returns a shared no-op object: no span, no
allocation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

if TYPE_CHECKING:
    from runtime.config import TracingConfig

log = logging.getLogger("plugway.telemetry")
TRACER_NAME = "plugway"
# Where a queued WhatsApp message keeps the trace context of the webhook that stored it.
TRACE_KEY = "plugway_trace"
_TOOL_ERROR_TYPE = re.compile(r'^\{"error":\{"type":"([a-z_]{1,40})"')
TOOL_OUTCOMES = frozenset({"tool_error", "tool_failed", "timeout", "invalid_arguments", "unknown_tool", "not_approved"})


def tool_outcome(ok: bool, content: str) -> str:
    """A bounded outcome for a finished tool call: ``ok`` or the kind of error the model was told."""
    if ok:
        return "ok"
    match = _TOOL_ERROR_TYPE.match(content)
    kind = match.group(1) if match else "tool_failed"
    return kind if kind in TOOL_OUTCOMES else "tool_failed"


_installed_provider: Any = None


def install_provider(config: TracingConfig, *, resource_attributes: Mapping[str, str] | None = None) -> Any:
    """Make sure the process has an SDK tracer provider exporting where ``config`` says; returns it.

    Once per process: the global provider can be set only once. A provider
    the host already installed (``opentelemetry-instrument``, a test's
    in-memory exporter) is used as it is, with our exporter added.
    """
    global _installed_provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if _installed_provider is not None:
        return _installed_provider
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        provider = existing
    else:
        resource = Resource.create({"service.name": config.service_name, **(resource_attributes or {})})
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        trace.set_tracer_provider(provider)
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint(config.endpoint), headers=config.headers or None)))
    elif config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    _installed_provider = provider
    return provider


def otlp_endpoint(endpoint: str | None) -> str | None:
    """The traces URL: a bare collector address gets OTLP/HTTP's ``/v1/traces``; None lets the exporter read OTEL_* variables."""
    if not endpoint:
        return None
    scheme, sep, rest = endpoint.partition("://")
    if sep and "/" not in rest.rstrip("/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class _NoSpan:
    """What every hook returns while tracing is off."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def finished(self, *args: Any, **kwargs: Any) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        return None


NO_SPAN = _NoSpan()


class _ActiveSpan:
    """A span made current for a block, and ended with an error status if the block fails.

    The block may be the body of an async generator (an upstream round), whose
    caller can change between two steps: the previous context is therefore
    restored by setting it again, never by resetting a token, which fails
    from another context.
    """

    __slots__ = ("span", "_parent", "_capture")

    def __init__(self, span: Span, capture_content: bool) -> None:
        self.span = span
        self._capture = capture_content
        self._parent: otel_context.Context | None = None

    def __enter__(self) -> Self:
        self._parent = otel_context.get_current()
        otel_context.attach(trace.set_span_in_context(self.span, self._parent))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None:
                code = getattr(exc, "code", None)
                if isinstance(exc, GeneratorExit):
                    self.span.set_attribute("plugway.abandoned", True)
                else:
                    error_type = code if isinstance(code, str) else type(exc).__name__
                    self.span.set_attribute("error.type", error_type)
                    message = getattr(exc, "message", None)
                    self.span.set_status(StatusCode.ERROR, message if isinstance(message, str) else None)
        finally:
            assert self._parent is not None
            otel_context.attach(self._parent)
            self.span.end()

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)


class RoundSpan(_ActiveSpan):
    __slots__ = ("provider_names",)

    def __init__(self, span: Span, capture_content: bool, provider_names: Mapping[str, str]) -> None:
        super().__init__(span, capture_content)
        self.provider_names = provider_names

    def finished(self, route: Any, turn: Any) -> None:
        """The round's answer: served by, response model and id, finish reason, usage."""
        span = self.span
        provider_id = route.provider
        if provider_id:
            span.set_attribute("plugway.provider.id", provider_id)
            name = self.provider_names.get(provider_id, "")
            if name:
                span.set_attribute("gen_ai.provider.name", name)
                span.set_attribute("gen_ai.system", name)
        if route.attempts:
            span.set_attribute("plugway.upstream.failed_attempts", len(route.attempts))
        if turn.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (str(turn.finish_reason),))
        usage = turn.usage or {}
        span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
        span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
        response = turn.response or {}
        if response.get("model"):
            span.set_attribute("gen_ai.response.model", str(response["model"]))
        if response.get("id"):
            span.set_attribute("gen_ai.response.id", str(response["id"]))
        if self._capture:
            span.set_attribute("gen_ai.output.messages", orjson.dumps([turn.message]).decode())


class ToolSpan(_ActiveSpan):
    __slots__ = ()

    def finished(self, outcome: str, content: str) -> None:
        self.span.set_attribute("plugway.tool.outcome", outcome)
        if outcome != "ok":
            self.span.set_attribute("error.type", outcome)
            self.span.set_status(StatusCode.ERROR)
        if self._capture:
            self.span.set_attribute("gen_ai.tool.call.result", content)


class Tracing:
    """Span factories for the hooks; each returns :data:`NO_SPAN` while tracing is off."""

    def __init__(self, config: TracingConfig, provider_names: Mapping[str, str]) -> None:
        """``provider_names``: each provider id's ``gen_ai.provider.name`` (from its kind's registration)."""
        self.enabled = config.enabled
        self.capture_content = config.capture_content
        self.provider_names = dict(provider_names)
        self._tracer: trace.Tracer | None = None
        if self.enabled:
            provider = install_provider(config)
            from runtime import __version__ as version

            self._tracer = provider.get_tracer(TRACER_NAME, version)

    @property
    def tracer(self) -> trace.Tracer:
        assert self._tracer is not None
        return self._tracer

    def model_round(self, request_model: str, provider_id: str, body: Mapping[str, Any], round_no: int, stream: bool) -> RoundSpan | _NoSpan:
        if self._tracer is None:
            return NO_SPAN
        name = self.provider_names.get(provider_id, "")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request_model,
            "plugway.round": round_no,
            "plugway.stream": stream,
        }
        if name:
            attributes["gen_ai.provider.name"] = name
            attributes["gen_ai.system"] = name
        for field, attribute in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p")):
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[attribute] = value
        if self.capture_content:
            attributes["gen_ai.input.messages"] = orjson.dumps(body.get("messages") or []).decode()
        span = self._tracer.start_span(f"chat {request_model}", kind=SpanKind.CLIENT, attributes=attributes)
        return RoundSpan(span, self.capture_content, self.provider_names)

    def tool_call(self, public_name: str, call_id: str, plugin_id: str | None, arguments: str) -> ToolSpan | _NoSpan:
        if self._tracer is None:
            return NO_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": public_name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": call_id,
        }
        if plugin_id:
            attributes["plugway.plugin.id"] = plugin_id
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = arguments
        span = self._tracer.start_span(f"execute_tool {public_name}", kind=SpanKind.INTERNAL, attributes=attributes)
        return ToolSpan(span, self.capture_content)

    def span(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None, parent: otel_context.Context | None = None) -> _ActiveSpan | _NoSpan:
        if self._tracer is None:
            return NO_SPAN
        span = self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
        return _ActiveSpan(span, self.capture_content)

    # -- propagation --------------------------------------------------------------------

    def inject(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """``headers`` with the current span's ``traceparent`` (a new dict when None and there is one)."""
        if self._tracer is None:
            return headers
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if not carrier:
            return headers
        return {**headers, **carrier} if headers else carrier

    def current_carrier(self) -> dict[str, str] | None:
        """The current trace context as W3C headers, to store with queued work."""
        if self._tracer is None:
            return None
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier or None

    @staticmethod
    def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
        """A context continuing the stored trace, or None when nothing valid was stored."""
        if not carrier:
            return None
        context = propagate.extract(dict(carrier))
        return context if trace.get_current_span(context).get_span_context().is_valid else None

    def annotate_current(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes to the current span (the request's), if it is still recording."""
        if self._tracer is None:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)

    def trace_ids(self) -> tuple[str, str] | None:
        """(trace id, span id) of the current span, in hex, for log lines."""
        if self._tracer is None:
            return None
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

