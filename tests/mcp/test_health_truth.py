"""Health that tells the truth (issue 23): a server that is down is shown down, its tools are
withdrawn, and a call meanwhile fails at once with the reason, not after its timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import orjson
import pytest

from runtime.mcp import McpManager
from runtime.plugin_host.tool import ToolError
from runtime.storage.keys import mint_admin_key
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import (
    ORG,
    HttpServer,
    ctx,
    eventually,
    http_ref,
    placed,
    server_ref,
    start_http_server,
)
from tests.support import Gateways

REASON = "cannot open the licence file /etc/lab/licence"


async def test_a_server_that_cannot_restart_fails_a_call_at_once_with_the_reason(tmp_path: Path) -> None:
    refuse = tmp_path / "refuse"
    ref = server_ref("lab", env={"MCP_TEST_REFUSE_START": str(refuse)})
    # The next attempt after a failed restart is 30 s away: a call that waited for it would
    # run into the guard below.
    manager = McpManager(backoff_initial_s=30, backoff_max_s=30)
    try:
        await manager.start(placed(ref))
        tools = {spec.name: spec for spec in await manager.tools_for(ref, organisation=ORG)}
        refuse.write_text(REASON)
        with anyio.fail_after(20):
            with pytest.raises(ToolError, match="exited with code 3"):
                await manager.call(ref, "crash", {}, organisation=ORG)
            await eventually(lambda: manager.health()["lab"]["state"] == "backoff", within_s=15)
            with pytest.raises(ToolError, match=f"exited with code 2 .*{REASON}"):
                await tools["echo"].invoke({"text": "anyone?"}, ctx())
        assert await manager.tools_for(ref, organisation=ORG) == []
        health = manager.health()["lab"]
        assert not health["healthy"] and REASON in health["error"]
    finally:
        await manager.aclose()


def offered(request: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in request.get("tools", [])}


def tool_contents(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_a_dead_stdio_servers_tools_are_withdrawn_and_a_call_meanwhile_says_why(
    tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways
) -> None:
    refuse = tmp_path / "refuse"
    lab = server_ref("lab", env={"MCP_TEST_REFUSE_START": str(refuse)}).mcp
    assert lab is not None
    plugins = [{"id": "lab", "mcp": lab.model_dump(mode="json", exclude_defaults=True)}, {"id": "calculator"}]
    server = gateways.start(plugins=plugins, orchestration={"tool_timeout_s": 60})
    # Far less than the tool timeout: a call that waited it out fails the test.
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0, timeout=30)
    refuse.write_text(REASON)
    upstream.enqueue(
        Reply(tool_calls=[("lab__crash", {})]),
        Reply(tool_calls=[("lab__echo", {"text": "anyone?"})]),
        Reply(text="the lab is down"),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "go"}])
    assert reply.choices[0].message.content == "the lab is down"
    assert "lab__echo" in offered(upstream.requests[0])
    (meanwhile,) = tool_contents(upstream.requests[2])[1:]
    error = orjson.loads(meanwhile)["error"]
    assert error["type"] == "tool_error" and REASON in error["message"]

    # While it is down, the model is not offered its tools; the rest stay.
    upstream.reset()
    upstream.enqueue(Reply(text="fine"))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "again"}])
    assert not any(name.startswith("lab__") for name in offered(upstream.requests[0]))
    assert "calculator__evaluate" in offered(upstream.requests[0])

    admin_key, _ = mint_admin_key(server.gateway.engine, name="ops")
    health = httpx.get(f"{server.url}/admin/v1/health", headers={"Authorization": f"Bearer {admin_key}"}).json()
    lab_health = health["checks"]["mcp"]["lab"]
    assert not lab_health["healthy"] and REASON in lab_health["error"]


@pytest.fixture
def modern_http(tmp_path: Path) -> Iterator[HttpServer]:
    # The 2026 protocol, stateless, announcing no list changes: no stream is held open.
    server = start_http_server(tmp_path, "--no-listen")
    yield server
    server.stop()


def test_a_stateless_http_server_that_dies_is_shown_down_after_a_ping(
    tmp_path: Path, upstream: FakeOpenAI, modern_http: HttpServer, gateways: Gateways
) -> None:
    lab = http_ref("lab", modern_http, ping_interval_s=0.5).mcp
    assert lab is not None
    plugins = [{"id": "lab", "mcp": lab.model_dump(mode="json", exclude_defaults=True)}]
    server = gateways.start(plugins=plugins)
    admin_key, _ = mint_admin_key(server.gateway.engine, name="ops")

    def lab_health() -> dict[str, Any]:
        response = httpx.get(f"{server.url}/admin/v1/health", headers={"Authorization": f"Bearer {admin_key}"})
        entry: dict[str, Any] = response.json()["checks"]["mcp"]["lab"]
        return entry

    assert lab_health()["healthy"] and lab_health()["protocol"] == "2026-07-28"
    modern_http.stop()
    deadline = time.monotonic() + 30
    while lab_health()["healthy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    health = lab_health()
    assert not health["healthy"] and health["state"] in ("reconnecting", "backoff")
    assert health["error"]
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200  # an MCP server down leaves the gateway ready
    assert ready.json()["checks"].get("mcp", {}).get("lab", {"ok": False})["ok"] is False
    organisation = httpx.get(
        f"{server.url}/admin/v1/organisations/acme", headers={"Authorization": f"Bearer {admin_key}"}
    ).json()
    (lab_summary,) = [p for p in organisation["plugins"] if p["id"] == "lab"]
    assert lab_summary["health"]["healthy"] is False  # what the console's MCP page shows

    modern_http.restart()
    deadline = time.monotonic() + 60
    while not lab_health()["healthy"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab_health()["healthy"]
