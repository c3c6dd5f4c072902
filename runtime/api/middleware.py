"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Give every request an id (the client's ``X-Request-Id`` if sane) and echo it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = "req_" + uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Read at send time: a route may adopt the body's own request_id (see use_request_id).
                message["headers"] = [*message.get("headers", []), (b"x-request-id", str(state["request_id"]).encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def use_request_id(scope: Scope, request_id: str | None) -> str:
    """Adopt a request id the client put in the body; it is echoed in ``X-Request-Id``. Returns the id in force."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if request_id and _SAFE_ID.match(request_id):
        state["request_id"] = request_id
    return str(state.get("request_id") or "")
