"""Helpers for the MCP tests: real server processes, process-table checks.

Named ``mcp_helpers`` (not ``helpers``) so it cannot collide with another test
folder's module on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import PluginRef
from runtime.plugin_host.tool import ToolContext

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = ROOT / "tests" / "fixtures" / "mcp_test_server.py"
TAG_ENV = "MCP_TEST_TAG"
# The organisation the manager-level tests run their servers for.
ORG = "org"


def placed(*refs: PluginRef, organisation: str = ORG) -> list[tuple[str, PluginRef]]:
    """The plugins as one organisation configures them (what ``McpManager.start`` takes)."""
    return [(organisation, ref) for ref in refs]


def server_ref(plugin_id: str, *args: str, env: dict[str, str] | None = None, **mcp: Any) -> PluginRef:
    return PluginRef.model_validate(
        {
            "id": plugin_id,
            "mcp": {"command": [sys.executable, str(TEST_SERVER), *args], "env": env or {}, **mcp},
        }
    )


def ctx(plugin_id: str = "t") -> ToolContext:
    return ToolContext(organisation_id="org", plugin_id=plugin_id, request_id="req-1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead: they hold no resources)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``MCP_TEST_TAG=<tag>``."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def eventually(predicate: Any, within_s: float = 5.0, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(interval_s)


@dataclass
class HttpServer:
    url: str
    port: int
    token: str
    marker_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    flags: tuple[str, ...] = ()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        self.process = spawn_http_server(self.port, self.env, *self.flags)


def spawn_http_server(port: int, env: dict[str, str], *flags: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(TEST_SERVER), "--transport", "streamable-http", "--port", str(port), *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"test HTTP MCP server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("test HTTP MCP server did not start listening")


def start_http_server(marker_dir: Path, *flags: str) -> HttpServer:
    """The test server over streamable HTTP (``flags``: see the server's docstring)."""
    port = free_port()
    token = uuid.uuid4().hex
    env = dict(os.environ, MCP_SERVER_TOKEN=token, MCP_TEST_MARKER_DIR=str(marker_dir))
    process = spawn_http_server(port, env, *flags)
    return HttpServer(f"http://127.0.0.1:{port}/mcp", port, token, marker_dir, process, env, flags)


def http_ref(plugin_id: str, server: HttpServer, **mcp: Any) -> PluginRef:
    headers = {"Authorization": f"Bearer {server.token}"}
    return PluginRef.model_validate({"id": plugin_id, "mcp": {"url": server.url, "headers": headers, **mcp}})
