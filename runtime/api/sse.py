"""Server-sent events: one framing, one set of response headers and one prologue for every streamed door."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.responses import StreamingResponse

T = TypeVar("T")

# No cache may keep a stream, and no proxy (nginx) may hold its events back.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"


def data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named(event: str, payload: Any) -> bytes:
    """An event with a name line (Anthropic's and the Responses API's framing)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def tool_progress(report: Any) -> bytes:
    """A tool's progress as the SSE comment every front door's stream carries (clients and SDKs skip comments)."""
    return b": plugway tool_progress " + orjson.dumps(report) + b"\n\n"


def response(body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> StreamingResponse:
    """A streamed answer: ``text/event-stream`` with :data:`HEADERS` and the route's own (rate limits, say)."""
    return StreamingResponse(body, media_type="text/event-stream", headers={**HEADERS, **(headers or {})})


async def first_bytes(events: AsyncIterator[T], encode: Callable[[T], bytes | None]) -> bytes:
    """Read the run until it has bytes for the client (empty if it ends first).

    Nothing is sent before then, so a run that fails at once (the upstream refused it) is
    answered with a real HTTP status instead of an error event inside a 200 stream.
    """
    async for event in events:
        head = encode(event)
        if head:
            return head
    return b""
