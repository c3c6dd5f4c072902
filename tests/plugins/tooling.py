"""Calling first-party tools through their registered specs, and a local website to fetch from."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runtime import ToolContext
from runtime.plugin_host.manager import load_plugins

HOST = load_plugins()
ALLOW_LOOPBACK = {"allow_private": True}


async def invoke_tool(plugin: str, tool: str, config: dict[str, Any] | None = None, **arguments: Any) -> Any:
    spec = HOST.plugins[plugin].tools[tool]
    ctx = ToolContext(organisation_id="o", plugin_id=plugin, request_id="r", config=config or {})
    return await spec.invoke(arguments, ctx)


def call_tool(plugin: str, tool: str, config: dict[str, Any] | None = None, **arguments: Any) -> Any:
    return asyncio.run(invoke_tool(plugin, tool, config, **arguments))


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass
class Site:
    """A loopback HTTP server; tests put pages (or page factories) at paths."""

    url: str
    pages: dict[str, Page | Callable[[], Page]]
    requests: list[tuple[str, dict[str, str]]]  # path and headers of every request received


@contextmanager
def local_site() -> Iterator[Site]:
    pages: dict[str, Page | Callable[[], Page]] = {}
    requests: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            requests.append((self.path, dict(self.headers.items())))
            entry = pages.get(self.path)
            page = entry() if callable(entry) else entry
            if page is None:
                page = Page(b"missing", "text/plain", status=404)
            self.send_response(page.status)
            self.send_header("Content-Type", page.content_type)
            self.send_header("Content-Length", str(len(page.body)))
            for name, value in page.headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(page.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as a capped reader should

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Site(url=f"http://127.0.0.1:{server.server_address[1]}", pages=pages, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
