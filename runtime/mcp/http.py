"""The HTTP client under a streamable-HTTP MCP connection, and what it tells the connection.

The SDK turns HTTP failures into generic MCP errors ("Session terminated",
"Server returned an error response"). The connection needs to know more:

- that the server no longer knows our session: a ``404`` to a request carrying
  ``Mcp-Session-Id`` (what the spec prescribes), or a ``400`` whose body talks
  about the session (what servers built on other SDKs answer). The spec's duty
  is then to start a new session; the connection reconnects and retries the
  call once;
- that the server cannot be reached on the session's standalone GET stream,
  which is the only traffic of an idle connection: health then says so instead
  of "ready" until a call fails;
- the status line of a failed handshake, for the operator ("HTTP 401").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import httpx2

SESSION_HEADER = "mcp-session-id"
# Longer bodies are not read: an error about a session is a short JSON-RPC error or a line of text.
_MAX_ERROR_BODY = 4096


@dataclass(frozen=True)
class HttpWatch:
    """Callbacks from the HTTP layer to the connection (each gets a short reason)."""

    session_gone: Callable[[str], None]
    unreachable: Callable[[str], None]
    # The status line of the latest refused request, None again when the next request goes out.
    http_error: Callable[[str | None], None]
    # True once the server refused the session: closing it then needs no DELETE.
    forgotten: Callable[[], bool]


async def _mentions_session(response: httpx2.Response) -> bool:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > _MAX_ERROR_BODY:
        return False
    try:
        # Reading here keeps the body for the SDK, which reads it again.
        body = await response.aread()
    except httpx2.HTTPError:
        return False
    return b"session" in body[:_MAX_ERROR_BODY].lower()


class _StandaloneStreamWatch(httpx2.AsyncBaseTransport):
    """Reports when the session's standalone GET stream cannot reach the server."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, watch: HttpWatch) -> None:
        self._inner = inner
        self._watch = watch

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "DELETE" and self._watch.forgotten():
            # Ending a session the server no longer has would only earn a refusal.
            return httpx2.Response(204, request=request)
        try:
            return await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            if request.method == "GET" and SESSION_HEADER in request.headers:
                self._watch.unreachable(f"{type(exc).__name__}: {exc or 'connection failed'}")
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class BearerAuth(httpx2.Auth):
    """An OAuth access token on every request, from ``bearer`` (runtime.mcp.oauth).

    ``bearer(False)`` answers the current token (refreshed before it expires); on a
    401 the request is sent once more with ``bearer(True)``, a token refreshed now
    (the server may have stopped accepting the old one before its expiry).
    """

    def __init__(self, bearer: Callable[[bool], Awaitable[str]]) -> None:
        self._bearer = bearer

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers["Authorization"] = f"Bearer {await self._bearer(False)}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await self._bearer(True)}"
            yield request


def watched_http_client(
    *, headers: dict[str, str], connect_timeout_s: float, watch: HttpWatch, auth: httpx2.Auth | None = None
) -> httpx2.AsyncClient:
    """An ``httpx2`` client for the SDK's streamable-HTTP transport, reporting to ``watch``."""

    async def on_request(request: httpx2.Request) -> None:
        if request.method == "POST":
            watch.http_error(None)

    async def on_response(response: httpx2.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        watch.http_error(f"HTTP {status} {response.reason_phrase}".strip())
        if SESSION_HEADER not in response.request.headers or status not in (400, 404):
            return
        if status == 404 or await _mentions_session(response):
            watch.session_gone(f"HTTP {status}")

    return httpx2.AsyncClient(
        headers=headers,
        auth=auth,
        transport=_StandaloneStreamWatch(httpx2.AsyncHTTPTransport(), watch),
        event_hooks={"request": [on_request], "response": [on_response]},
        # Reads stay long: a tool may legitimately stream for minutes; the
        # per-call timeout is the orchestration's, enforced by cancellation.
        timeout=httpx2.Timeout(30.0, connect=connect_timeout_s, read=300.0),
    )
