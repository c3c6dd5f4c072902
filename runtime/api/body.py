"""Reading request bodies with a size cap: refused by ``Content-Length`` first, and
never kept past the cap, so an oversized body costs no more memory than the cap.

A refused body is answered at once, and the rest of it is then read and dropped, up
to a bound, before the answer is finished and the connection closed, as nginx's
lingering close does: a client that writes its whole body before it reads (Python's
``urllib``, many simple clients) would otherwise have its connection reset mid-write
and never see the 413, while a client that reads as it writes sees it early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import request_too_large

# How much of a refused body is read and dropped, and for how long, after the answer;
# past either bound the connection is closed (the client may then see a reset).
DISCARD_MAX_BYTES = 64 * 1024 * 1024
DISCARD_MAX_S = 10.0
# Scope key: the refused body's remaining chunks and how much of it was read.
UNREAD_BODY = "plugway.unread_body"


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DISCARD_MAX_BYTES:
            request.scope[UNREAD_BODY] = (request.stream(), 0)
        raise request_too_large(limit)
    body = bytearray()
    chunks = request.stream()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            request.scope[UNREAD_BODY] = (chunks, len(body))
            raise request_too_large(limit)
    return bytes(body)


class LingeringClose:
    """Pure ASGI: when a route refused a body it did not read (see :func:`read_body`), send
    the answer, then drop the rest of the body (bounded) before finishing the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_lingering(message: Message) -> None:
            unread = scope.get(UNREAD_BODY)
            if unread is None or message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            del scope[UNREAD_BODY]
            await send({**message, "more_body": True})  # the whole answer is out: the client can read it
            await _discard(scope, *unread)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, send_lingering)


async def _discard(scope: Scope, chunks: AsyncIterator[bytes], already: int) -> None:
    expect = dict(scope.get("headers") or ()).get(b"expect", b"").lower()
    if not already and expect == b"100-continue":
        return  # the client waits for our go-ahead before sending: the body never comes
    received = already
    with contextlib.suppress(TimeoutError, ClientDisconnect):
        async with asyncio.timeout(DISCARD_MAX_S):
            async for chunk in chunks:
                received += len(chunk)
                if received > DISCARD_MAX_BYTES:
                    return
