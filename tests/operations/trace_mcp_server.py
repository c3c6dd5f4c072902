"""An MCP server whose one tool reports the trace context its call arrived with (``_meta`` and HTTP header).

Run as ``python tests/operations/trace_mcp_server.py [--transport streamable-http --port N]``.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from mcp_servers._runner import http_app, parse_args, run

server = MCPServer("trace-echo")


@server.tool()
def trace_seen(ctx: Context) -> dict[str, Any]:
    """The W3C trace context of this call: from params._meta, and from the HTTP traceparent header."""
    meta = ctx.request_context.meta
    fields = meta if isinstance(meta, dict) else (meta.model_dump() if meta is not None else {})
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    return {"meta": fields.get("traceparent"), "header": headers.get("traceparent") if headers is not None else None}


def app() -> Any:
    return http_app(server, host="127.0.0.1")


if __name__ == "__main__":
    run(server, parse_args("trace echo MCP server"))
