"""The first thing every request meets: who sent it, how much it may send, how long it may take.

:class:`RequestGuard` wraps the whole app (FastAPI's stack and the direct model routes):

- **Body cap.** A ``Content-Length`` over ``max_body_bytes`` is answered ``413`` before
  anything else runs; a body without one (chunked) is counted as it arrives and cut off
  at the cap. Nothing past the cap is ever held in memory.
- **Body deadline.** A body that has not fully arrived ``body_read_timeout_s`` after the
  request began is answered ``408`` and the connection closed: a client that sends
  headers and part of a body, then waits (slowloris), holds a connection for that long
  at most. The deadline covers the body only; a long streamed answer is not cut.
  Request headers have the same deadline, kept by the HTTP protocol itself
  (:class:`HeadersDeadlineProtocol`, see :func:`server_options`).
- **Admin key before the body.** Under ``/admin/v1`` the admin key is checked before
  the app runs: FastAPI reads and parses a route's whole body before its dependencies,
  so an unauthenticated caller would otherwise make the gateway parse what it sent.

A refusal made before the body was read says ``Connection: close``, and the connection
lingers before it closes: the answer is sent, then the rest of the body (a declared body
up to four caps, else one cap's worth; for at most ``LINGER_S``) is read and dropped, so
that a client still sending does not have the connection reset before it reads the
answer. Nothing read is kept.

:func:`forwarded_for` believes ``X-Forwarded-For`` only from ``trusted_proxies``.
"""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.errors import GatewayError, request_too_large

ErrorRenderer = Callable[[GatewayError], Response]

ADMIN_PREFIX = "/admin/v1"
# How long a refused request's connection goes on reading (and dropping) its body before closing.
LINGER_S = 2.0


class BodyRefused(GatewayError):
    """The body broke the cap or the deadline; the guard has already answered."""


def body_read_timeout(seconds: float) -> GatewayError:
    return GatewayError(
        408,
        f"The request body did not arrive within {seconds:g} seconds.",
        code="request_timeout",
        type="invalid_request_error",
    )


def _closing(error: GatewayError) -> GatewayError:
    error.headers = {**(error.headers or {}), "Connection": "close"}
    return error


class RequestGuard:
    """ASGI middleware enforcing the body cap, the body deadline and admin authentication first."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_read_timeout_s: float,
        renderers: dict[str, ErrorRenderer],
        default_renderer: ErrorRenderer,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout_s = body_read_timeout_s
        # Longest prefix first: each route family answers in its own envelope.
        self.renderers = sorted(renderers.items(), key=lambda item: len(item[0]), reverse=True)
        self.default_renderer = default_renderer

    def _render(self, path: str, error: GatewayError) -> Response:
        for prefix, renderer in self.renderers:
            if path == prefix or path.startswith(prefix + "/"):
                return renderer(error)
        return self.default_renderer(error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self.refuse(scope, receive, send, request_too_large(self.max_body_bytes))
            return
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            from runtime.control.auth import require_admin

            try:
                await require_admin(Request(scope))
            except GatewayError as refused:
                await self.refuse(scope, receive, send, refused)
                return
        await _GuardedRequest(self, scope, receive, send).run()

    async def refuse(
        self, scope: Scope, receive: Receive, send: Send, error: GatewayError, *, linger: bool = True
    ) -> None:
        """Answer, then (lingering) drop what the client still sends, then close."""
        response = self._render(scope["path"], _closing(error))
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        if linger:
            dropped = 0
            with anyio.move_on_after(LINGER_S):
                while dropped <= _linger_bytes(scope, self.max_body_bytes):
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
                    dropped += len(message.get("body", b""))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _linger_bytes(scope: Scope, max_body_bytes: int) -> int:
    """How much of a refused body to drop before closing: all of a declared body up to four
    caps (a client that writes it all before reading, like urllib, then reads its answer),
    else one cap's worth."""
    declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
    if declared.isdigit() and int(declared) <= 4 * max_body_bytes:
        return int(declared)
    return max_body_bytes


class _GuardedRequest:
    """One request: its body counted and timed, the app's answer replaced if the body was refused."""

    def __init__(self, guard: RequestGuard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard = guard
        self.scope = scope
        self._receive = receive
        self._send = send
        self.deadline = time.monotonic() + guard.body_read_timeout_s
        self.received = 0
        self.body_done = False
        self.started = False
        self.refused = False

    async def run(self) -> None:
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except BodyRefused:
            if not self.refused:
                raise

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()
        message: Message | None = None
        if self.deadline - time.monotonic() > 0:
            # Most bodies have arrived by the time the app asks: the server's receive then
            # answers without waiting, and no timer is set. Only a receive that must wait
            # for the client waits under the deadline.
            pending = self._receive()
            if type(pending) is not types.CoroutineType:
                with anyio.move_on_after(self.deadline - time.monotonic()):
                    message = await pending
            else:
                try:
                    waiting_on = pending.send(None)
                except StopIteration as answered:
                    message = answered.value
                else:
                    with anyio.move_on_after(self.deadline - time.monotonic()):
                        message = await _resumed(pending, waiting_on)
        if message is None:
            # A stalled client sends nothing more to wait for.
            await self._refuse(body_read_timeout(self.guard.body_read_timeout_s), linger=False)
        assert message is not None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.guard.max_body_bytes:
                await self._refuse(request_too_large(self.guard.max_body_bytes), linger=True)
            self.body_done = not message.get("more_body", False)
        else:
            self.body_done = True
        return message

    async def _refuse(self, error: GatewayError, *, linger: bool) -> None:
        """Answer now (unless the app already began to), then stop the app's reading."""
        self.refused = True
        if not self.started:
            await self.guard.refuse(self.scope, self._receive, self._send, error, linger=linger)
        raise BodyRefused(error.status, error.message, code=error.code, type=error.type)

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the guard answered; whatever the app makes of the cut-off body is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


@types.coroutine
def _resumed(coroutine: Coroutine[Any, Any, Message], waiting_on: Any) -> Generator[Any, Any, Message]:
    """Await the rest of ``coroutine``, which was stepped once by hand and is waiting on ``waiting_on``.

    What ``await`` does (``yield from``), from the second step on: what the coroutine
    waits on goes to the task, and what the task sends or throws (a cancellation) goes
    back into the coroutine.
    """
    step = waiting_on
    try:
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # noqa: BLE001 (a cancellation, handed on)
                step = coroutine.throw(exc)
            else:
                step = coroutine.send(sent)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def forwarded_for(app: ASGIApp, trusted_proxies: list[str]) -> ASGIApp:
    """``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed from these peers only (none: never)."""
    if not trusted_proxies:
        return app
    return ProxyHeadersMiddleware(app, trusted_hosts=trusted_proxies)  # type: ignore[arg-type,return-value]


def server_options(request_read_timeout_s: float | None = None, *, spawned: bool = False) -> dict[str, object]:
    """uvicorn settings every plugway server runs with.

    uvicorn believes ``X-Forwarded-For`` from loopback by default; plugway decides itself,
    from ``trusted_proxies`` (see :func:`forwarded_for`). And uvicorn waits for a request's
    headers forever (an idle or half-sent request holds its connection): given a timeout,
    headers not complete that long after the connection opened, or after the previous
    answer, close the connection. ``spawned``: for worker processes, which get the
    protocol by name and the timeout through the environment.
    """
    options: dict[str, object] = {"proxy_headers": False}
    if request_read_timeout_s is None:
        return options
    if spawned:
        os.environ[_HEADERS_TIMEOUT_ENV] = str(request_read_timeout_s)
        options["http"] = f"{__name__}:HeadersDeadlineProtocol"
    else:
        options["http"] = type("HeadersDeadlineProtocol", (HeadersDeadlineProtocol,), {"timeout_s": request_read_timeout_s})
    return options


_HEADERS_TIMEOUT_ENV = "PLUGWAY_HEADERS_TIMEOUT_S"


class HeadersDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose request headers do not arrive in time.

    One timer per connection, not one per request: each request only notes when its
    headers are due (or that they came), and the timer, when it fires, closes the
    connection if headers are overdue, or waits on for the deadline now in force.
    """

    timeout_s = float(os.environ.get(_HEADERS_TIMEOUT_ENV) or 30.0)
    _headers_timer: asyncio.TimerHandle | None = None
    _headers_due: float | None = None  # loop time the awaited headers must be complete by; None: none awaited

    def _await_headers(self) -> None:
        due = self._headers_due = self.loop.time() + self.timeout_s
        if self._headers_timer is None:
            self._headers_timer = self.loop.call_at(due, self._check_headers)

    def _check_headers(self) -> None:
        self._headers_timer = None
        due = self._headers_due
        if due is None:
            return  # they came; the next answer sets the next deadline
        if self.loop.time() < due:
            # A later request's headers, with a later deadline.
            self._headers_timer = self.loop.call_at(due, self._check_headers)
        elif not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_due = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_due = None
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None
        super().connection_lost(exc)
