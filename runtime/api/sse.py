"""Server-sent events as bytes: one framing for every streamed front door."""

from __future__ import annotations

from typing import Any

import orjson

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
