"""What a request may cost before it is trusted: body caps, body deadlines, admin keys before
bodies, and whose X-Forwarded-For is believed. All over raw sockets to a real uvicorn."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from runtime.storage.keys import mint_admin_key
from tests.fakes.openai_server import FakeOpenAI
from tests.support import Gateways, GatewayServer

BIG = 64 * 1024 * 1024
PIECE = 256 * 1024


def _rss_bytes() -> int:
    # The gateway serves from a thread of this process: its memory is this process's.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Upload:
    """A 64 MB JSON body pushed at the gateway from a thread, counting what the server took."""

    def __init__(self, port: int, method: str, path: str, *, chunked: bool, headers: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}"
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n{headers}\r\n"
        self.sock.sendall(head.encode())
        self.chunked = chunked
        self.sent = 0
        self._thread = threading.Thread(target=self._push, daemon=True)
        self._thread.start()

    def _push(self) -> None:
        piece = b'{"name": "' + b"x" * (PIECE - 10)
        try:
            while self.sent < BIG:
                data = piece if self.sent == 0 else b"x" * PIECE
                if self.chunked:
                    data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
                self.sock.sendall(data)
                self.sent += PIECE
            self.sock.sendall(b'"}' if not self.chunked else b'2\r\n"}\r\n0\r\n\r\n')
        except OSError:
            pass  # the server closed the connection: what it refused is not sent

    def status(self) -> int:
        received = b""
        while b"\r\n" not in received:
            data = self.sock.recv(65536)
            if not data:
                break
            received += data
        found = re.match(rb"HTTP/1\.1 (\d{3})", received)
        assert found, received[:200]
        return int(found.group(1))

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=60)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's included router, its prefix in its paths
            yield from _api_routes(route.original_router.routes)


def _admin_routes(server: GatewayServer) -> list[tuple[str, str]]:
    routes = []
    for route in _api_routes(server.app.routes):
        if route.path.startswith("/admin/v1"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            routes += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return routes


@pytest.fixture
def server(gateways: Gateways) -> GatewayServer:
    return gateways.start(body_read_timeout_s=1)


def test_unauthenticated_64mb_bodies_to_every_admin_route_are_refused_unread(server: GatewayServer) -> None:
    routes = _admin_routes(server)
    assert len(routes) >= 20, routes  # the enumeration found the management API
    before = _rss_bytes()
    for method, path in routes:
        for chunked in (False, True):
            upload = _Upload(server.port, method, path, chunked=chunked)
            try:
                status = upload.status()
            finally:
                upload.close()
            # Over the cap by Content-Length: 413; chunked: the admin key is asked for first.
            assert status == (401 if chunked else 413), (method, path, chunked, status)
            # The server stopped taking the body: what the socket buffers hold, not 64 MB.
            assert upload.sent < 16 * 1024 * 1024, (method, path, chunked, upload.sent)
    grown = _rss_bytes() - before
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MB"


def test_a_body_over_the_cap_without_content_length_is_cut_off_at_the_cap(server: GatewayServer) -> None:
    key, _ = mint_admin_key(server.gateway.engine, name="ops")
    upload = _Upload(server.port, "POST", "/admin/v1/keys", chunked=True, headers=f"Authorization: Bearer {key}\r\n")
    try:
        assert upload.status() == 413
    finally:
        upload.close()
    assert upload.sent < 16 * 1024 * 1024


def _stalled_body_is_closed(port: int, path: str, authorization: str) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ".encode()
        )
        received = b""
        ceiling = time.monotonic() + 30
        while time.monotonic() < ceiling:
            data = sock.recv(65536)  # blocks until the server answers or closes
            if not data:
                return received
            received += data
        raise AssertionError(f"the connection was still open after 30 s: {received[:200]!r}")
    finally:
        sock.close()


def test_a_connection_that_never_finishes_its_body_is_closed(server: GatewayServer) -> None:
    answer = _stalled_body_is_closed(server.port, "/v1/chat/completions", f"Bearer {server.mint()}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


def test_a_stalled_admin_body_is_closed_too(server: GatewayServer) -> None:
    key, _ = mint_admin_key(server.gateway.engine, name="ops")
    answer = _stalled_body_is_closed(server.port, "/admin/v1/keys", f"Bearer {key}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def _audited_source_ip(server: GatewayServer) -> str | None:
    key, _ = mint_admin_key(server.gateway.engine, name="ops")
    with httpx.Client(base_url=f"{server.url}/admin/v1", headers={"Authorization": f"Bearer {key}"}, timeout=20) as admin:
        created = admin.post("/keys", json={"organisation": "acme"}, headers={"X-Forwarded-For": "6.6.6.6"})
        assert created.status_code == 201, created.text
        events = admin.get("/audit").json()["data"]
    [event] = [event for event in events if event["action"] == "key.create"]
    source: str | None = event["source_ip"]
    return source


def test_x_forwarded_for_from_an_untrusted_loopback_peer_is_ignored(server: GatewayServer) -> None:
    assert _audited_source_ip(server) == "127.0.0.1"


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    server = gateways.start(trusted_proxies=["127.0.0.0/8"])
    assert _audited_source_ip(server) == "6.6.6.6"


def _closed_within_ceiling(sock: socket.socket) -> bytes:
    received = b""
    ceiling = time.monotonic() + 30
    while time.monotonic() < ceiling:
        data = sock.recv(65536)
        if not data:
            return received
        received += data
    raise AssertionError(f"the connection was still open after 30 s: {received[:200]!r}")


def test_a_connection_that_never_finishes_its_headers_is_closed(server: GatewayServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _closed_within_ceiling(sock) == b""


def test_an_idle_connection_is_closed(server: GatewayServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        assert _closed_within_ceiling(sock) == b""
    # After an answer, the next request's headers have the same deadline.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\n")
        assert _closed_within_ceiling(sock).startswith(b"HTTP/1.1 200")
