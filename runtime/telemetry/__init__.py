"""Operations: Prometheus metrics, OpenTelemetry traces and structured request logs.

The rest of the code reports through :func:`current` (the process's
:class:`Telemetry`), with one small hook where something happens:

==========================================  ======================================================
where                                       hook
==========================================  ======================================================
HTTP requests (``TelemetryMiddleware``)     ``request_started`` / ``request_finished``
admission                                   ``admitted``, ``limiter_decision``, ``limiter_unavailable``
usage accounting (``Ledger.record``)        ``usage_recorded``
an upstream round (the loop)                ``model_round`` (a span)
the router                                  ``upstream_finished``, ``upstream_first_chunk``, ``upstream_retry``
provider requests                           ``trace_headers``
one tool execution                          ``observe_tool``
the WhatsApp webhook and worker             ``stamp_queued``, ``webhook_events``, ``whatsapp_processing``, ``whatsapp_outcome``
==========================================  ======================================================

Settings: ``metrics`` (``enabled``, ``token``), ``tracing`` (``enabled``,
``exporter``, ``endpoint``, ``headers``, ``service_name``, ``sample_ratio``,
``capture_content``), ``logging`` (``format``, ``level``, ``requests``,
``debug_content``). The metric families are listed in :mod:`.metrics`, the
spans in :mod:`.tracing`, the request line's fields in :mod:`.logs`.
"""

import inspect

from fastapi import FastAPI

from runtime.telemetry.core import Telemetry, current, install, uninstall
from runtime.telemetry.middleware import TelemetryMiddleware

__all__ = ["Telemetry", "TelemetryMiddleware", "current", "install", "uninstall"]


def fastapi_options(tracing_enabled: bool) -> dict[str, object]:
    """``FastAPI(**fastapi_options(...))``: FastAPI's native HTTP server span is the request span (incoming
    ``traceparent`` honoured); its own metrics and logs stay off. FastAPI before 0.165 has no native
    telemetry: nothing is passed, and traces then start at the upstream rounds."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {
        "tracing": tracing_enabled,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        # Scrapes and probes every few seconds would drown the traces that matter.
        "exclude": _unobserved,
    }}


_UNOBSERVED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def _unobserved(scope: object) -> bool:
    return isinstance(scope, dict) and scope.get("path") in _UNOBSERVED_PATHS
