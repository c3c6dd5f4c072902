"""McpManager against a real MCP server over streamable HTTP (a separate process)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from runtime.config import PluginRef
from runtime.mcp import McpManager
from runtime.plugin_host.tool import ToolError
from tests.mcp.mcp_helpers import (
    ORG,
    HttpServer,
    ctx,
    eventually,
    free_port,
    placed,
    start_http_server,
)


def http_ref(plugin_id: str, url: str, token: str | None) -> PluginRef:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return PluginRef.model_validate({"id": plugin_id, "mcp": {"url": url, "headers": headers}})


async def test_configured_headers_reach_the_server(http_server: HttpServer) -> None:
    good = http_ref("kb", http_server.url, http_server.token)
    no_token = http_ref("kb-anon", http_server.url, None)
    wrong_token = http_ref("kb-wrong", http_server.url, "not-the-token")
    manager = McpManager(connect_timeout_s=5)
    try:
        await manager.start(placed(good, no_token, wrong_token))
        health = manager.health()
        assert health["kb"]["healthy"] and health["kb"]["transport"] == "http"
        assert health["kb"]["pid"] is None
        for refused in ("kb-anon", "kb-wrong"):
            assert not health[refused]["healthy"]
            assert "HTTP 401" in health[refused]["error"]
        assert await manager.tools_for(no_token, organisation=ORG) == []
        tools = {spec.name: spec for spec in await manager.tools_for(good, organisation=ORG)}
        assert tools["add"].parameters["required"] == ["a"]
        assert await tools["echo"].invoke({"text": "over http"}, ctx("kb")) == "over http"
        with pytest.raises(ToolError, match="nope"):
            await tools["fail"].invoke({"message": "nope"}, ctx("kb"))
    finally:
        await manager.aclose()


async def test_abandoned_http_call_is_cancelled_on_the_server(http_server: HttpServer) -> None:
    ref = http_ref("kb", http_server.url, http_server.token)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        tools = {spec.name: spec for spec in await manager.tools_for(ref, organisation=ORG)}
        tag = f"http-cancel-{uuid.uuid4().hex[:6]}"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tools["sleep"].invoke({"seconds": 30, "tag": tag}, ctx()), 0.5)
        await eventually(lambda: (http_server.marker_dir / f"{tag}.cancelled").exists(), within_s=5)
        assert not (http_server.marker_dir / f"{tag}.done").exists()
        assert await tools["echo"].invoke({"text": "still usable"}, ctx()) == "still usable"
    finally:
        await manager.aclose()


async def test_http_tool_list_follows_server_changes(http_server: HttpServer) -> None:
    ref = http_ref("kb", http_server.url, http_server.token)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        name = f"http_fresh_{uuid.uuid4().hex[:6]}"
        await manager.call(ref, "add_tool", {"name": name}, organisation=ORG)

        async def offered() -> bool:
            return name in {spec.name for spec in await manager.tools_for(ref, organisation=ORG)}

        await eventually(offered, within_s=5)
        assert await manager.call(ref, name, {}, organisation=ORG) == f"dynamic {name}"
    finally:
        await manager.aclose()


async def test_unreachable_server_is_a_tool_error_then_recovers(tmp_path: object) -> None:
    server = start_http_server(tmp_path)  # type: ignore[arg-type]
    ref = http_ref("remote", server.url, server.token)
    manager = McpManager(connect_timeout_s=5, backoff_initial_s=0.2, backoff_max_s=0.5)
    try:
        await manager.start(placed(ref))
        tools = {spec.name: spec for spec in await manager.tools_for(ref, organisation=ORG)}
        assert await tools["echo"].invoke({"text": "up"}, ctx()) == "up"

        server.stop()
        down_since = time.monotonic()
        with pytest.raises(ToolError, match="remote"):
            await asyncio.wait_for(tools["echo"].invoke({"text": "down"}, ctx()), 5)
        assert time.monotonic() - down_since < 5
        await eventually(lambda: manager.health()["remote"]["state"] == "backoff", within_s=3)
        assert "ConnectError" in manager.health()["remote"]["error"]
        # It could not be brought back: its tools are withdrawn, and a call fails at once saying why.
        assert await manager.tools_for(ref, organisation=ORG) == []
        with pytest.raises(ToolError, match="unavailable .*ConnectError"):
            await tools["echo"].invoke({"text": "still down"}, ctx())

        server.restart()
        await eventually(lambda: manager.health()["remote"]["healthy"], within_s=10)
        assert await tools["echo"].invoke({"text": "back"}, ctx()) == "back"
    finally:
        await manager.aclose()
        server.stop()


async def test_nothing_listening_at_boot_is_unhealthy_not_fatal() -> None:
    ref = http_ref("ghost", f"http://127.0.0.1:{free_port()}/mcp", None)
    manager = McpManager(connect_timeout_s=3)
    try:
        started = time.monotonic()
        await manager.start(placed(ref))
        assert time.monotonic() - started < 3.5
        health = manager.health()["ghost"]
        assert not health["healthy"] and "ConnectError" in health["error"]
        assert await manager.tools_for(ref, organisation=ORG) == []
    finally:
        await manager.aclose()
