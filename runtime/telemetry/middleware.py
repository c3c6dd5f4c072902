"""The HTTP side of request telemetry: one record per request, read when the answer is sent."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.telemetry.core import current
from runtime.telemetry.record import RequestRecord, close_record, open_record

# Route label of a request no route matched (a random path must not become a label).
UNMATCHED_ROUTE = "unmatched"


# An error body larger than this is not parsed for its code (error envelopes are a few hundred bytes).
MAX_ERROR_BODY = 16_384
_NAMED_FIELD = re.compile(r"^([A-Za-z_][\w.]*(?:\[\d+\][\w.]*)*): ")


def note_error(record: RequestRecord, body: bytes) -> None:
    """Read the error code and message from an error response's envelope, whichever front door's it is."""
    if len(body) > MAX_ERROR_BODY:
        return
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(envelope, dict):
        return
    error = envelope.get("error")
    if isinstance(error, dict):  # OpenAI's, Anthropic's and JSON-RPC's
        code, message = error.get("code") or error.get("type"), error.get("message")
    elif isinstance(error, str):  # the endpoints' {"ok": false, "error", "code"}
        code, message = envelope.get("code"), error
    else:
        return
    record.error_code = str(code)[:64] if code else None
    record.error_message = str(message)[:2000] if message else None
    param = error.get("param") if isinstance(error, dict) else None
    if param is None and isinstance(error, dict) and envelope.get("type") == "error" and isinstance(message, str):
        # Anthropic's envelope has no param: plugway's /v1/messages errors start with it ("messages[3].role: ...").
        named = _NAMED_FIELD.match(message)
        param = named.group(1) if named else None
    record.error_param = str(param)[:200] if param is not None else None


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

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif not record.first_byte and message.get("body"):
                record.first_byte = time.perf_counter()
                if record.status >= 400:
                    note_error(record, message["body"])
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
            telemetry.request_finished(record)
