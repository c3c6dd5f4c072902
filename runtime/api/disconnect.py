"""Cancel work when the client hangs up on a non-streamed request.

Starlette notices a disconnect only while it streams; a plain response is
written after the work is done. Once the body has been read, the next ASGI
``receive()`` returns only when the client disconnects, so waiting on it beside
the work tells us the moment the client is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from runtime.errors import GatewayError

T = TypeVar("T")


class ClientDisconnected(GatewayError):
    """Nobody is left to read the answer (logged as 499, nginx's code for it)."""

    def __init__(self) -> None:
        super().__init__(499, "The client closed the connection before the answer was ready.", code="client_closed_request")


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise :class:`ClientDisconnected`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()
