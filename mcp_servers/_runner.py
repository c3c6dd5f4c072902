"""Command line shared by the bundled MCP servers: stdio by default, or streamable HTTP.

``python -m mcp_servers.<name> [--transport stdio|streamable-http] [--host H] [--port N]``.
Over HTTP, setting ``MCP_SERVER_TOKEN`` makes the server refuse any request that
does not carry ``Authorization: Bearer <token>``: a support database must not be
readable by whoever can reach the port.
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import Sequence
from typing import Any

import anyio
from mcp.server import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "MCP_SERVER_TOKEN"


class BearerTokenGuard:
    """ASGI middleware: 401 for HTTP requests without the expected bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            # Constant-time comparison: the token is a secret.
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
        await self.app(scope, receive, send)


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--path", default="/mcp", help="URL path of the MCP endpoint over HTTP")
    return parser.parse_args(argv)


def http_app(server: MCPServer[Any], *, host: str, path: str = "/mcp") -> ASGIApp:
    app: ASGIApp = server.streamable_http_app(streamable_http_path=path, host=host)
    token = os.environ.get(TOKEN_ENV)
    if token:
        app = BearerTokenGuard(app, token)
    return app


async def serve_http(server: MCPServer[Any], *, host: str, port: int, path: str = "/mcp") -> None:
    import uvicorn

    config = uvicorn.Config(
        http_app(server, host=host, path=path), host=host, port=port, log_level="warning"
    )
    await uvicorn.Server(config).serve()


def run(server: MCPServer[Any], args: argparse.Namespace) -> None:
    if args.transport == "stdio":
        server.run()
    else:
        anyio.run(lambda: serve_http(server, host=args.host, port=args.port, path=args.path))
