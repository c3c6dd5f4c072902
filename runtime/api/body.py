"""Reading request bodies with a size cap: refused by ``Content-Length`` first, and
never kept past the cap, so an oversized body costs no more memory than the cap.

A refused body is still read (and dropped), up to a bound, before the 413 goes out,
as nginx's lingering close does: a client that writes its whole body before it reads
(Python's ``urllib``, many simple clients) would otherwise have its connection reset
mid-write and never see the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from runtime.errors import request_too_large

# How much of a refused body is read and dropped, and for how long, before answering;
# past either bound the connection is closed (the client may then see a reset).
DISCARD_MAX_BYTES = 64 * 1024 * 1024
DISCARD_MAX_S = 10.0


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DISCARD_MAX_BYTES:
            await _discard(request, request.stream(), 0)
        raise request_too_large(limit)
    body = bytearray()
    chunks = request.stream()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            await _discard(request, chunks, len(body))
            raise request_too_large(limit)
    return bytes(body)


async def _discard(request: Request, chunks: AsyncIterator[bytes], already: int) -> None:
    if not already and request.headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for our go-ahead before sending: the body never comes
    received = already
    with contextlib.suppress(TimeoutError, ClientDisconnect):
        async with asyncio.timeout(DISCARD_MAX_S):
            async for chunk in chunks:
                received += len(chunk)
                if received > DISCARD_MAX_BYTES:
                    return
