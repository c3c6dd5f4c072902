"""The HTTP side of request telemetry: one record per request, read when the answer is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.telemetry.core import current
from runtime.telemetry.record import RequestRecord, close_record, open_record

# Route label of a request no route matched (a random path must not become a label).
UNMATCHED_ROUTE = "unmatched"
# An error answer is a small JSON document; more than this is not one worth reading.
ERROR_BODY_MAX_BYTES = 64 * 1024


class LabelledRoute(Route):
    """A plain Starlette route that names itself in the scope, as FastAPI's routes do.

    Telemetry labels a request by ``scope["route"]``; Starlette's own ``Route`` (used
    for an ASGI app as endpoint, such as ``/mcp``) does not set it, so its requests
    would count as unmatched.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def error_of(body: bytes) -> tuple[str, str | None]:
    """``(code, param)`` of an error answer in any of the gateway's envelopes; ``("", None)`` if none.

    OpenAI's ``{"error": {"code", "param", "type"}}``, Anthropic's
    ``{"type": "error", "error": {"type"}}`` and the endpoints' ``{"ok": false, "code"}``.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", None
    if not isinstance(document, dict):
        return "", None
    error = document.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        param = error.get("param")
        return str(code), str(param) if param is not None else None
    code = document.get("code")
    return (str(code), None) if code else ("", None)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED_ROUTE


class TelemetryMiddleware:
    """Counts, times and logs every HTTP request by its route template (pure ASGI: streams pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        telemetry = current()
        record = telemetry.request_started(scope["method"])
        if record is None:
            await self.app(scope, receive, send)
            return

        error_body: list[bytes] | None = None

        async def send_observed(message: Message) -> None:
            nonlocal error_body
            if message["type"] == "http.response.start":
                record.status = message["status"]
                if record.status >= 400:
                    error_body = []  # read after it is sent: the log line names the code and the field
            elif error_body is not None and message["type"] == "http.response.body":
                if sum(map(len, error_body)) < ERROR_BODY_MAX_BYTES:
                    error_body.append(message.get("body", b""))
            await send(message)

        token = open_record(record)
        try:
            await self.app(scope, receive, send_observed)
        except asyncio.CancelledError:
            record.status = record.status or 499  # the client went away before an answer
            raise
        except Exception:
            record.status = record.status or 500
            raise
        finally:
            close_record(token)
            record.route = route_template(scope)
            state: dict[str, Any] = scope.get("state") or {}
            record.request_id = str(state.get("request_id") or record.request_id)
            if error_body:
                _note_error(record, b"".join(error_body))
            telemetry.request_finished(record)


def _note_error(record: RequestRecord, body: bytes) -> None:
    if not record.error_code:
        record.error_code, record.error_param = error_of(body)
