"""Structured logs: JSON lines, and one line per request.

``logging.format: json`` turns every log record into one JSON object per line
(``ts``, ``level``, ``logger``, ``message``, plus ``request_id`` and, with
tracing on, ``trace_id``/``span_id`` when the record was made during a
request). Each finished request adds one line from the ``plugway.request``
logger (message ``request``) whose fields are listed in :data:`REQUEST_FIELDS`.

What never reaches a line: keys (the key's id only), upstream API keys, the
request's messages and the answer. ``logging.debug_content: true`` adds the
messages and the answer to the request line, for debugging only.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

from runtime.telemetry.record import RequestRecord, current_record

if TYPE_CHECKING:
    from runtime.config import LoggingConfig

request_log = logging.getLogger("plugway.request")
REQUEST_FIELDS = (
    "request_id",
    "method",
    "route",
    "status",
    "outcome",
    "error_code",
    "param",
    "organisation",
    "key_id",
    "source",
    "model",
    "provider",
    "rounds",
    "tool_calls",
    "tool_failures",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms",
)
# Client libraries log every request at INFO: a write per upstream call on the hot path.
NOISY_LOGGERS = ("httpx", "httpcore", "httpx2", "aiohttp.access", "mcp")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_trace_ids: Any = None  # set by Telemetry when tracing is on: () -> (trace_id, span_id) | None


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a request line's fields come from ``record.plugway``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "plugway", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            current = current_record()
            if current is not None and current.request_id:
                entry["request_id"] = current.request_id
        if "trace_id" not in entry and _trace_ids is not None:
            ids = _trace_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(config: LoggingConfig | None) -> None:
    """The process's root handler: text (as before) or JSON lines, at the configured level."""
    level = getattr(logging, config.level) if config is not None else logging.INFO
    root = logging.getLogger()
    json_lines = config is not None and config.format == "json"
    formatter: logging.Formatter = JsonFormatter() if json_lines else logging.Formatter(_TEXT_FORMAT)
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if json_lines:
        _uvicorn_json()


def _uvicorn_json() -> None:
    """uvicorn installs its own handlers when its server is configured (after this): make them write JSON too."""
    try:
        from uvicorn.config import LOGGING_CONFIG
    except ImportError:  # pragma: no cover - uvicorn is a dependency
        return
    for name in ("default", "access"):
        LOGGING_CONFIG["formatters"][name] = {"()": "runtime.telemetry.logs.JsonFormatter"}
    for handled in logging.getLogger("uvicorn").handlers + logging.getLogger("uvicorn.error").handlers:
        handled.setFormatter(JsonFormatter())


def request_fields(record: RequestRecord, latency_s: float, *, with_content: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "route": record.route,
        "status": record.status,
        "outcome": record.outcome or None,
        "error_code": record.error_code or None,
        "param": record.error_param,
        "organisation": record.organisation or None,
        "key_id": record.key_id,
        "source": record.source or None,
        "model": record.model or None,
        "provider": record.provider or None,
        "rounds": record.rounds,
        "tool_calls": record.tool_calls,
        "tool_failures": record.tool_failures,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens,
        "cost_usd": round(record.cost_usd, 8),
        "latency_ms": round(latency_s * 1000, 2),
    }
    if record.trace_id:
        fields["trace_id"] = record.trace_id
    if with_content and record.content is not None:
        fields["content"] = record.content
    return fields


def log_request(record: RequestRecord, latency_s: float, *, with_content: bool) -> None:
    fields = request_fields(record, latency_s, with_content=with_content)
    level = logging.WARNING if record.status >= 500 else logging.INFO
    # The text format shows the message only: make it the gist; JSON lines carry every field.
    failure = ""
    if record.status >= 400:
        # Why it failed, in the line itself: the error's code and the field it names.
        failure = f" error={record.error_code or '-'} param={record.error_param or '-'}"
    request_log.log(
        level,
        "request %s %s %s %s%s org=%s model=%s provider=%s rounds=%d tokens=%d %.1fms",
        record.request_id, record.method, record.route, record.status, failure, record.organisation or "-",
        record.model or "-", record.provider or "-", record.rounds, fields["total_tokens"], fields["latency_ms"],
        extra={"plugway": fields},
    )
