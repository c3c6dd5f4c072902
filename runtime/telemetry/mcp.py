"""Trace context for MCP servers reached over streamable HTTP.

The MCP SDK puts the caller's ``traceparent`` in each request's
``params._meta`` (for stdio and HTTP alike). Over HTTP the request is sent by
the connection's own task, where the caller's span is not current, so the
header is copied from that ``_meta`` instead: proxies and HTTP-level tracing
on the server's side see it too.
"""

from __future__ import annotations

from typing import Any

import orjson

from runtime.telemetry.core import current

_MARKER = b'"traceparent"'


async def traceparent_header(request: Any) -> None:
    """An ``httpx2`` request hook: ``traceparent`` header from the JSON-RPC body's ``params._meta``."""
    if not current().tracing.enabled or request.method != "POST":
        return
    content = request.content
    if _MARKER not in content:
        return
    try:
        message = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    meta = ((message.get("params") or {}).get("_meta") or {}) if isinstance(message, dict) else {}
    for name in ("traceparent", "tracestate"):
        value = meta.get(name)
        if isinstance(value, str) and value:
            request.headers[name] = value
