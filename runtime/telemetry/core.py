"""The one object the rest of the code reports to: metrics, spans and request lines behind small hooks.

Each gateway process has one :class:`Telemetry`, made current by
:func:`install` when the gateway is built; code that runs without a gateway
(unit tests of the loop, say) reports to a disabled one. Hooks are plain
method calls that cost a few dict lookups with metrics on and nothing but an
attribute test with tracing off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry.trace import SpanKind

from runtime.config import LoggingConfig, MetricsConfig, ModelConfig, Settings, TracingConfig
from runtime.json_types import JSON
from runtime.limits import LimitDecision
from runtime.providers.registry import provider_kind
from runtime.telemetry import logs
from runtime.telemetry.metrics import Metrics
from runtime.telemetry.record import RequestRecord, close_record, current_record, open_record
from runtime.telemetry.tracing import NO_SPAN, TRACE_KEY, Tracing, tool_outcome

if TYPE_CHECKING:
    from runtime.requestlog.writer import RequestLogWriter

log = logging.getLogger("plugway.telemetry")
# Route label of messages the WhatsApp worker answers (no HTTP request of their own).
WHATSAPP_WORKER_ROUTE = "whatsapp_worker"
# How often, in --workers N mode, each process refreshes the gauges only it knows (MCP, usage backlog).
SAMPLE_INTERVAL_S = 5.0
_STATUS_TEXT: dict[int, str] = {}


class _ToolOutcome(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def round(self) -> int: ...

    @property
    def error(self) -> str | None: ...

    @property
    def content(self) -> str: ...

    @property
    def duration_ms(self) -> float: ...


FinishedTool = TypeVar("FinishedTool", bound=_ToolOutcome)
# Sets a feature's gauges from the state it reads (a table, say) when /metrics is scraped.
StateSampler = Callable[[Metrics], Awaitable[None]]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is built per request.
@dataclass(slots=True)
class UsageLabels:
    """One usage record as telemetry sees it: labels and counts, no orchestration objects."""

    organisation: str
    model: str
    key_id: str | None
    source: str
    provider: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rounds: int = 0
    orchestrated: bool = False
    tool_calls: int = 0
    tool_failures: int = 0
    endpoint: str | None = None
    served_model: str | None = None  # the model that answered (a fallback's, say)


def _status_text(status: int) -> str:
    text = _STATUS_TEXT.get(status)
    if text is None:
        text = _STATUS_TEXT[status] = str(status)
    return text


class Telemetry:
    def __init__(self, settings: Settings | None = None) -> None:
        metrics_config = settings.metrics if settings is not None else MetricsConfig(enabled=False)
        tracing_config = settings.tracing if settings is not None else TracingConfig()
        logging_config = settings.logging if settings is not None else LoggingConfig()
        self.settings = settings
        self.metrics: Metrics | None = Metrics() if metrics_config.enabled else None
        self.metrics_token = metrics_config.token
        provider_names = {p.id: provider_kind(p.kind).gen_ai_name for p in settings.providers} if settings is not None else {}
        self.tracing = Tracing(tracing_config, provider_names)
        self.log_requests = logging_config.requests if logging_config.requests is not None else logging_config.format == "json"
        self.log_content = logging_config.debug_content
        # Request records are worth keeping only if something reads them at the end.
        self.records = self.metrics is not None or self.log_requests or self.tracing.enabled
        if self.tracing.enabled:
            logs._trace_ids = self.tracing.trace_ids
        self._mcp_seen: dict[str, int] = {}
        self._state_samplers: list[StateSampler] = []
        self._sampler: asyncio.Task[None] | None = None
        self.request_log: RequestLogWriter | None = None

    # -- requests -------------------------------------------------------------------------

    def request_started(self, method: str, route: str = "") -> RequestRecord | None:
        if not self.records:
            return None
        return RequestRecord(route=route, method=method, started=time.perf_counter())

    def request_finished(self, record: RequestRecord) -> None:
        latency = time.perf_counter() - record.started
        if record.status >= 400:
            # Whatever the work reported, the answer was an error: the outcome is its code.
            record.outcome = record.error_code or _status_text(record.status)
        elif not record.outcome:
            record.outcome = "ok"
        metrics = self.metrics
        if metrics is not None:
            metrics.requests.labels(record.route, record.organisation, record.model, record.provider, _status_text(record.status)).inc()
            metrics.request_duration.labels(record.route, record.model).observe(latency)
        if self.log_requests:
            logs.log_request(record, latency, with_content=self.log_content)
        if self.request_log is not None:
            self.request_log.record(record, latency)

    @contextmanager
    def work(self, route: str, request_id: str) -> Iterator[RequestRecord | None]:
        """A request that did not come over HTTP (the WhatsApp worker's): counted and logged like one."""
        record = self.request_started("-", route)
        if record is None:
            yield None
            return
        record.request_id = request_id
        token = open_record(record)
        try:
            yield record
            record.status = record.status or 200
        except BaseException as exc:
            status = getattr(exc, "status", None)
            record.status = status if isinstance(status, int) else (499 if isinstance(exc, asyncio.CancelledError) else 500)
            raise
        finally:
            close_record(token)
            self.request_finished(record)

    def admitted(
        self,
        *,
        request_id: str,
        organisation: str,
        model: str | None,
        key_id: str | None,
        source: str,
        endpoint: str | None = None,
        capture_bodies: bool = False,
    ) -> None:
        """Admission resolved who asks for which model (before budget and limits can refuse it)."""
        record = current_record()
        if record is not None:
            record.organisation = organisation
            if model is not None:
                record.model = model
            record.key_id = key_id
            record.source = source
            record.endpoint = endpoint
            record.capture_bodies = capture_bodies
            if not record.request_id:
                record.request_id = request_id
        if self.tracing.enabled:
            attributes: JSON = {
                "plugway.request_id": request_id,
                "plugway.organisation": organisation,
                "plugway.source": source,
            }
            if model is not None:
                attributes["plugway.model"] = model
            if key_id:
                attributes["plugway.key_id"] = key_id
            self.tracing.annotate_current(attributes)
            if record is not None:
                ids = self.tracing.trace_ids()
                record.trace_id = ids[0] if ids else None

    def usage_recorded(self, usage: UsageLabels, cost_usd: float, status: str) -> None:
        """Usage accounting wrote a record: tokens, cost, rounds and tool calls (every upstream call and tool call passes here)."""
        provider = usage.provider or ""
        metrics = self.metrics
        if metrics is not None:
            if usage.prompt_tokens:
                metrics.tokens.labels(usage.organisation, usage.model, provider, "input").inc(usage.prompt_tokens)
            if usage.completion_tokens:
                metrics.tokens.labels(usage.organisation, usage.model, provider, "output").inc(usage.completion_tokens)
            if cost_usd:
                metrics.cost.labels(usage.organisation, usage.model).inc(cost_usd)
            if usage.orchestrated:
                metrics.rounds.labels(usage.source, usage.model).observe(usage.rounds)
        record = current_record()
        if record is not None:
            if not record.organisation:  # work admitted outside this HTTP request's record
                record.organisation, record.key_id, record.source = usage.organisation, usage.key_id, usage.source
                record.endpoint = usage.endpoint
            # A tool called on its own is admitted without a model: the request is labelled with the tool.
            record.model = record.model or usage.model
            record.served_model = usage.served_model or record.served_model
            record.prompt_tokens += usage.prompt_tokens
            record.completion_tokens += usage.completion_tokens
            record.cost_usd += cost_usd
            record.rounds += usage.rounds
            record.tool_calls += usage.tool_calls
            record.tool_failures += usage.tool_failures
            record.provider = provider or record.provider
            record.outcome = status
        if self.tracing.enabled:
            self.tracing.annotate_current(
                {"gen_ai.usage.input_tokens": record.prompt_tokens if record else usage.prompt_tokens,
                 "gen_ai.usage.output_tokens": record.completion_tokens if record else usage.completion_tokens,
                 "plugway.rounds": record.rounds if record else usage.rounds}
            )

    # -- limits ---------------------------------------------------------------------------

    def limiter_decision(self, organisation_id: str, decision: LimitDecision) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        metrics.limiter_decisions.labels(organisation_id, decision.reason or "allowed").inc()
        if decision.allowed:
            if decision.limit_requests:
                metrics.limiter_remaining.labels(organisation_id, "requests").observe((decision.remaining_requests or 0) / decision.limit_requests)
            if decision.limit_tokens:
                metrics.limiter_remaining.labels(organisation_id, "tokens").observe((decision.remaining_tokens or 0) / decision.limit_tokens)

    def limiter_unavailable(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.limiter_unavailable.labels(operation).inc()

    # -- upstream -------------------------------------------------------------------------

    def model_round(self, model: ModelConfig, body: Mapping[str, Any], round_no: int, stream: bool) -> Any:
        """A span for one upstream round (use with ``with``; call ``.finished(route, turn)`` on its answer)."""
        observed: Any = self.tracing.model_round(model.upstream, model.provider, body, round_no, stream) if self.tracing.enabled else NO_SPAN
        if self.log_content:
            observed = _ContentCapture(observed, body)
        record = current_record()
        if record is not None and self.request_log is not None:
            observed = _RoundTimeline(observed, record, body, round_no)
        return observed

    def upstream_finished(self, provider_id: str, model_id: str, started: float, error: Any) -> None:
        """One provider's share of a model call ended (``error``: the UpstreamError, or None)."""
        if self.metrics is None:
            return
        if error is None:
            outcome = "ok"
        elif error.throttled:
            outcome = "throttled"
        elif error.client_error:
            outcome = "client_error"
        else:
            outcome = "error"
        self.metrics.upstream_duration.labels(provider_id, model_id, outcome).observe(time.perf_counter() - started)

    def upstream_first_chunk(self, provider_id: str, model_id: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.first_token.labels(provider_id, model_id).observe(time.perf_counter() - started)

    def upstream_retry(self, provider_id: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_retries.labels(provider_id).inc()

    def trace_headers(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """Outgoing request headers with the current ``traceparent`` (unchanged while tracing is off)."""
        if not self.tracing.enabled:
            return headers
        return self.tracing.inject(headers)

    # -- tools ----------------------------------------------------------------------------

    async def observe_tool(
        self,
        run: Awaitable[FinishedTool],
        *,
        call_id: str,
        tool: str,
        plugin: str,
        arguments: str,
        organisation_id: str,
        name: str | None = None,
    ) -> FinishedTool:
        """Run one tool execution under its span, and count it when it is done.

        ``tool`` and ``plugin`` are labels: "unknown" for a name the model made up (free text is never a label).
        ``name`` is the name as called, for the request log's timeline only.
        """
        started = time.perf_counter()
        with self.tracing.tool_call(tool, call_id, plugin, arguments) as span:
            finished = await run
            outcome = tool_outcome(finished.ok, finished.content)
            span.finished(outcome, finished.content)
        record = current_record()
        if record is not None and self.request_log is not None:
            if record.timeline is None:
                record.timeline = []
            record.timeline.append(
                {
                    "kind": "tool",
                    "round": finished.round,
                    "name": (name or tool)[:128],
                    "plugin": plugin,
                    "start_ms": round((started - record.started) * 1000, 2),
                    "duration_ms": round(finished.duration_ms, 2),
                    "outcome": outcome,
                    "error": finished.error,
                }
            )
        if self.metrics is not None:
            self.metrics.tool_calls.labels(organisation_id, plugin, tool, outcome).inc()
            self.metrics.tool_duration.labels(plugin, tool, outcome).observe(finished.duration_ms / 1000)
        return finished

    def span(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None) -> Any:
        """Any other span (embeddings, WhatsApp sends): a no-op while tracing is off."""
        if not self.tracing.enabled:
            return NO_SPAN
        return self.tracing.span(name, kind=kind, attributes=attributes)

    # -- WhatsApp ---------------------------------------------------------------------------

    def stamp_queued(self, raws: Iterable[JSON]) -> None:
        """Store the webhook's trace context with each message about to be queued (``raw["plugway_trace"]``)."""
        carrier = self.tracing.current_carrier() if self.tracing.enabled else None
        if carrier is None:
            return
        for raw in raws:
            raw[TRACE_KEY] = carrier

    def webhook_events(self, counts: Mapping[str, int]) -> None:
        if self.metrics is None:
            return
        for result, count in counts.items():
            if count:
                self.metrics.whatsapp_webhook_events.labels(result).inc(count)

    @asynccontextmanager
    async def whatsapp_processing(self, app_id: str, message_id: int, wamid: str, attempts: int, raw: Mapping[str, Any]) -> AsyncIterator[None]:
        """One attempt at answering a queued message: its request metrics, log line and span (continuing the webhook's trace)."""
        with self.work(WHATSAPP_WORKER_ROUTE, f"wa-{message_id}-{attempts}"):
            if not self.tracing.enabled:
                yield
                return
            stored = raw.get(TRACE_KEY)
            parent = self.tracing.extract(stored if isinstance(stored, dict) else None)
            attributes = {
                "messaging.system": "plugway",
                "messaging.operation.type": "process",
                "messaging.destination.name": "wa_inbound",
                "messaging.message.id": wamid,
                "plugway.whatsapp.app_id": app_id,
                "plugway.whatsapp.inbound_id": message_id,
                "plugway.whatsapp.attempt": attempts,
            }
            with self.tracing.span("process whatsapp", kind=SpanKind.CONSUMER, attributes=attributes, parent=parent):
                yield

    def whatsapp_outcome(self, app_id: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.whatsapp_messages.labels(app_id, outcome).inc()

    # -- state sampled rather than counted -------------------------------------------------------

    def add_state_sampler(self, sampler: StateSampler) -> Callable[[], None]:
        """A feature's gauges of shared state (the WhatsApp queue), set at scrape time; returns its removal."""
        self._state_samplers.append(sampler)
        return lambda: self._state_samplers.remove(sampler)

    async def refresh(self, gateway: Any) -> None:
        """Set the gauges that describe state: MCP servers, the usage writer, and the features' samplers."""
        metrics = self.metrics
        if metrics is None:
            return
        self._sample_process(gateway)
        for sampler in list(self._state_samplers):
            await sampler(metrics)

    def _sample_process(self, gateway: Any) -> None:
        metrics = self.metrics
        assert metrics is not None
        metrics.usage_backlog.metric.set(gateway.usage.backlog())
        if gateway.mcp is None:
            return
        for server, health in gateway.mcp.health().items():
            metrics.mcp_up.labels(server).set(1 if health.get("healthy") else 0)
            # health() reports a running count per connection: the counter grows by what is new.
            restarts = int(health.get("restarts") or 0)
            seen = self._mcp_seen.get(server, 0)
            if restarts > seen:
                metrics.mcp_reconnects.labels(server).inc(restarts - seen)
                self._mcp_seen[server] = restarts

    def start(self, gateway: Any) -> None:
        """Start the request log's writer; in --workers N mode each process also refreshes its own gauges."""
        from runtime.requestlog.writer import RequestLogWriter

        if self.request_log is None:
            self.request_log = RequestLogWriter(gateway.engine, gateway.settings)
            self.request_log.start()
            self.records = True  # every request is logged, whatever metrics and logs are on
        if self.metrics is not None and self.metrics.multiprocess and self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever(gateway), name="plugway-metrics-sampler")

    async def _sample_forever(self, gateway: Any) -> None:
        while True:
            try:
                self._sample_process(gateway)
            except Exception:
                log.exception("metrics sampling failed")
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self.request_log is not None:
            await self.request_log.aclose()
        if self.metrics is not None:
            self.metrics.process_exited()


class _ContentCapture:
    """``logging.debug_content``: the round's messages and answer go to the request's log line."""

    __slots__ = ("inner", "body")

    def __init__(self, inner: Any, body: Mapping[str, Any]) -> None:
        self.inner = inner
        self.body = body

    def __enter__(self) -> _ContentCapture:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)

    def finished(self, route: Any, turn: Any) -> None:
        self.inner.finished(route, turn)
        record = current_record()
        if record is not None:
            record.content = {"messages": self.body.get("messages"), "answer": turn.message}


class _RoundTimeline:
    """One upstream round's place on the request log's timeline, and (when captured) its bodies."""

    __slots__ = ("inner", "record", "body", "round_no", "started")

    def __init__(self, inner: Any, record: RequestRecord, body: Mapping[str, Any], round_no: int) -> None:
        self.inner = inner
        self.record = record
        self.body = body
        self.round_no = round_no
        self.started = 0.0

    def __enter__(self) -> _RoundTimeline:
        self.inner.__enter__()
        self.started = time.perf_counter()
        record = self.record
        if record.capture_bodies and record.request_body is None:
            # The first round's request: the client's conversation after the input guardrails.
            # A shallow copy, as later rounds append to the same message list.
            body = self.body
            record.request_body = {
                **{name: value for name, value in body.items() if name != "tools"},
                "messages": list(body.get("messages") or []),
                "tools": [(tool.get("function") or {}).get("name") for tool in body.get("tools") or []],
            }
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.inner.__exit__(exc_type, exc, tb)
        record = self.record
        if record.timeline is None:
            record.timeline = []
        record.timeline.append(
            {
                "kind": "round",
                "round": self.round_no,
                "name": str(self.body.get("model") or ""),
                "plugin": None,
                "start_ms": round((self.started - record.started) * 1000, 2),
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "outcome": "ok" if exc_type is None else ("cancelled" if exc_type in (asyncio.CancelledError, GeneratorExit) else "error"),
                "error": None if exc is None or exc_type in (asyncio.CancelledError, GeneratorExit) else str(exc)[:300],
            }
        )

    def finished(self, route: Any, turn: Any) -> None:
        self.inner.finished(route, turn)
        if self.record.capture_bodies:
            # Kept by reference and read when the log is written: the output guardrails redact
            # this very message in place after the round, so what is stored is what the client got.
            self.record.response_body = turn.message


_current = Telemetry()


def current() -> Telemetry:
    return _current


def install(settings: Settings) -> Telemetry:
    """Build the process's telemetry from ``settings`` and make it current."""
    global _current
    _current = Telemetry(settings)
    return _current


def uninstall(telemetry: Telemetry) -> None:
    """Back to a disabled telemetry, unless another gateway has installed its own since."""
    global _current
    if _current is telemetry:
        _current = Telemetry()
