"""Prometheus metrics: every family plugway exports, and their exposition.

The official ``prometheus-client`` keeps the numbers. Two modes:

- one process (``plugway serve``): each :class:`Metrics` has its own
  ``CollectorRegistry`` (a second gateway in the same process, as in the
  tests, starts from zero);
- several processes (``plugway serve --workers N``): ``PROMETHEUS_MULTIPROC_DIR``
  is set by ``serve`` before the workers start (see
  :func:`prepare_multiprocess_directory`); every process writes its values to
  memory-mapped files there and whichever worker answers ``/metrics`` adds
  them all up. Gauges say how: ``livesum``/``livemin`` over live processes,
  ``mostrecent`` for values read from the database.

Labels are bounded by the configuration: route templates (never raw paths),
configured organisation, model and provider ids, plugin ids and the public
names of configured tools (a tool name the model invented is ``unknown``),
HTTP statuses, and small fixed sets of outcomes. No request id, key, user
text or error message is ever a label value.

On the hot path a labelled child is looked up once per label combination and
cached in a plain dict (:class:`Family`), so that a request costs a few dict
lookups and ``inc``/``observe`` calls, not ``labels()``'s lock and argument
checks each time.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "plugway"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. Requests and upstream calls run from milliseconds (a cached passthrough) to minutes (tool rounds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ROUND_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 16, 32, 64)
REMAINING_BUCKETS = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)

M = TypeVar("M", Counter, Gauge, Histogram)
# `*_created` timestamps double every counter's series and no dashboard here reads them.
disable_created_metrics()


class Family(Generic[M]):
    """One metric family with its labelled children cached by label tuple."""

    __slots__ = ("metric", "_children")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


def multiprocess_directory() -> str | None:
    """The shared directory of ``--workers N`` mode, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_directory() -> str:
    """Before ``--workers N`` processes start: a clean directory for their metric files, in the environment.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used and emptied of the
    previous run's files (stale counters would otherwise be added to the new
    ones); otherwise a fresh temporary directory is made. Returns its path.
    """
    directory = multiprocess_directory()
    if directory:
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)
    else:
        directory = tempfile.mkdtemp(prefix="plugway-metrics-")
        os.environ[MULTIPROC_ENV] = directory
        import atexit

        atexit.register(shutil.rmtree, directory, True)
    return directory


class Metrics:
    """Every metric family (see the module docstring and the README for what each one means)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_directory() is not None
        # In multiprocess mode values live in the shared files; the registry is built per scrape.
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        counter = self._counter
        histogram = self._histogram
        gauge = self._gauge

        self.requests = counter(
            "requests_total",
            "Requests the gateway answered, by route template, organisation, model, serving provider and HTTP status.",
            ("route", "organisation", "model", "provider", "status"),
        )
        self.request_duration = histogram(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its answer (a whole stream included).",
            ("route", "model"),
            LATENCY_BUCKETS,
        )
        self.upstream_duration = histogram(
            "upstream_request_duration_seconds",
            "One upstream model call to one provider, its own retries included, until its last byte; "
            "outcome ok, throttled, client_error or error.",
            ("provider", "model", "outcome"),
            LATENCY_BUCKETS,
        )
        self.first_token = histogram(
            "upstream_time_to_first_token_seconds",
            "Streamed upstream calls: time until the provider's first chunk.",
            ("provider", "model"),
            FIRST_TOKEN_BUCKETS,
        )
        self.upstream_retries = counter(
            "upstream_retries_total", "Upstream calls retried on the same provider.", ("provider",)
        )
        self.tokens = counter(
            "tokens_total",
            "Tokens billed, by organisation, model, serving provider and type (input or output).",
            ("organisation", "model", "provider", "type"),
        )
        self.cost = counter(
            "cost_usd_total", "Cost billed in US dollars, at the configured prices.", ("organisation", "model")
        )
        self.rounds = histogram(
            "orchestration_rounds",
            "Upstream rounds of each orchestrated request (a request with server-side tools).",
            ("source", "model"),
            ROUND_BUCKETS,
        )
        self.tool_calls = counter(
            "tool_calls_total",
            "Tool executions by organisation, plugin, public tool name and outcome "
            "(ok, tool_error, tool_failed, timeout, invalid_arguments, unknown_tool, not_approved).",
            ("organisation", "plugin", "tool", "outcome"),
        )
        self.tool_duration = histogram(
            "tool_call_duration_seconds",
            "Duration of each tool execution.",
            ("plugin", "tool", "outcome"),
            TOOL_BUCKETS,
        )
        self.limiter_decisions = counter(
            "limiter_decisions_total",
            "Rate-limit checks by organisation and decision (allowed, rpm, daily_tokens).",
            ("organisation", "decision"),
        )
        self.limiter_unavailable = counter(
            "limiter_unavailable_total",
            "Times the rate limiter (Redis) could not be reached: 'acquire' refused a request (503), "
            "'record_tokens' missed a daily-token count.",
            ("operation",),
        )
        self.limiter_remaining = histogram(
            "limiter_remaining_ratio",
            "What an admitted request left of its key's limit (0: the last one allowed), by limit (requests, tokens).",
            ("organisation", "limit"),
            REMAINING_BUCKETS,
        )
        self.mcp_up = gauge(
            "mcp_server_up",
            "1 when the MCP server's connection is ready (in every gateway process), else 0.",
            ("server",),
            "livemin",
        )
        self.mcp_reconnects = counter(
            "mcp_reconnects_total", "MCP connections lost after being up, and made again.", ("server",)
        )
        self.whatsapp_webhook_events = counter(
            "whatsapp_webhook_events_total",
            "Events of signed webhook deliveries, by what became of them "
            "(stored, duplicate, stale, ignored, status, rejected, unrouted).",
            ("result",),
        )
        self.whatsapp_messages = counter(
            "whatsapp_messages_total",
            "Inbound WhatsApp messages the worker finished or retried, by app and outcome "
            "(answered, failed, ignored, stale, retried).",
            ("app", "outcome"),
        )
        self.whatsapp_queue = gauge(
            "whatsapp_queue_messages",
            "Inbound WhatsApp messages waiting (pending) or being answered (processing), by app.",
            ("app", "status"),
            "mostrecent",
        )
        self.whatsapp_oldest_pending = gauge(
            "whatsapp_oldest_pending_age_seconds",
            "Age of the oldest inbound message still waiting for a worker, by app (0 when none waits).",
            ("app",),
            "mostrecent",
        )
        self.whatsapp_dead_letters = gauge(
            "whatsapp_dead_letters",
            "Inbound messages given up on (status failed), by app: see `plugway whatsapp failed`.",
            ("app",),
            "mostrecent",
        )
        self.usage_backlog = gauge(
            "usage_writer_backlog_rows",
            "Usage records buffered in memory, not yet in the database (set aside ones included).",
            (),
            "livesum",
        )

    # -- construction -----------------------------------------------------------------

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...]) -> Family[Counter]:
        return Family(Counter(name, documentation, labels, namespace=NAMESPACE, registry=self.registry))

    def _histogram(
        self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Family[Histogram]:
        return Family(Histogram(name, documentation, labels, namespace=NAMESPACE, registry=self.registry, buckets=buckets))

    def _gauge(self, name: str, documentation: str, labels: tuple[str, ...], mode: str) -> Family[Gauge]:
        return Family(
            Gauge(name, documentation, labels, namespace=NAMESPACE, registry=self.registry, multiprocess_mode=mode)  # type: ignore[arg-type]
        )

    # -- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every family (all processes' in multiprocess mode)."""
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def process_exited(self) -> None:
        """Multiprocess mode: drop this process's live gauges (its counters stay in the sums)."""
        if self.multiprocess:
            prometheus_multiprocess.mark_process_dead(os.getpid())
