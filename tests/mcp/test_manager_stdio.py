"""McpManager against real MCP servers over stdio (child processes of the test)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from runtime.config import PluginRef
from runtime.mcp import McpManager
from runtime.orchestration.naming import public_name
from runtime.plugin_host.tool import ToolError, ToolResult, ToolSpec
from tests.mcp.mcp_helpers import (
    ORG,
    TAG_ENV,
    ctx,
    eventually,
    placed,
    process_alive,
    server_ref,
    tagged_processes,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG_DOTTED_NAME = "reports.quarterly." + "x" * 90
PNG_PIXEL_BYTES = 67  # len(PNG_PIXEL) in the test server
SECRET_ENV = "PLUGWAY_TEST_GATEWAY_SECRET"


class Servers:
    def __init__(self, marker_dir: Path) -> None:
        env = {"MCP_TEST_MARKER_DIR": str(marker_dir), "CONFIGURED_VAR": "configured"}
        self.marker_dir = marker_dir
        self.modern = server_ref("t", env=env)
        self.modern_alias = server_ref("t-alias", env=env)  # identical config, other plugin id
        self.legacy = server_ref("legacy", "--legacy", env=env)
        self.manager = McpManager(max_result_chars=1000, connect_timeout_s=15)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    # A secret in the gateway's environment that children must not inherit.
    os.environ[SECRET_ENV] = "do-not-leak"
    servers = Servers(tmp_path_factory.mktemp("markers"))
    started = time.monotonic()
    await servers.manager.start(placed(servers.modern, servers.modern_alias, servers.legacy))
    assert time.monotonic() - started < 15
    yield servers
    await servers.manager.aclose()
    os.environ.pop(SECRET_ENV, None)


async def specs(manager: McpManager, ref: PluginRef) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in await manager.tools_for(ref, organisation=ORG)}


async def test_tools_keep_original_names_descriptions_and_schemas(servers: Servers) -> None:
    tools = await specs(servers.manager, servers.modern)
    # The server lists 3 tools per page: all of them arriving proves pagination is followed.
    assert {
        "echo",
        "add",
        "sleep",
        "fail",
        "explode",
        "crash",
        "pid",
        "env",
        "picture",
        "forecast",
        "big",
        LONG_DOTTED_NAME,
        "spawn_sleeper",
        "add_tool",
    } <= set(tools)
    add = tools["add"]
    assert add.plugin_id == "t" and add.source == "mcp"
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["required"] == ["a"]
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert add.parameters["properties"]["b"]["default"] == 1
    exposed = public_name("t", LONG_DOTTED_NAME)  # what the gateway offers the model
    assert len(exposed) == 64 and "." not in exposed


async def test_calls_return_model_readable_text(servers: Servers) -> None:
    tools = await specs(servers.manager, servers.modern)
    assert await tools["echo"].invoke({"text": "hello"}, ctx()) == "hello"
    assert await tools["add"].invoke({"a": 2, "b": 40}, ctx()) == "42"
    forecast = json.loads(await tools["forecast"].invoke({"city": "Oslo"}, ctx()))
    assert forecast == {"city": "Oslo", "temperature_c": 21.5, "conditions": "sunny"}
    picture = await tools["picture"].invoke({"caption": "tiny"}, ctx())
    # The image travels beside the text, never inside it: the loop decides what the model gets.
    assert isinstance(picture, ToolResult) and picture.text == "tiny"
    (image,) = picture.images
    assert (image.mime_type, image.size) == ("image/png", PNG_PIXEL_BYTES)
    assert await tools[LONG_DOTTED_NAME].invoke({}, ctx()) == "long name reached"


async def test_error_results_and_unknown_tools_become_tool_errors(servers: Servers) -> None:
    tools = await specs(servers.manager, servers.modern)
    with pytest.raises(ToolError, match="boom: no such order"):
        await tools["fail"].invoke({"message": "boom: no such order"}, ctx())
    with pytest.raises(ToolError, match="Error executing tool explode"):
        await tools["explode"].invoke({}, ctx())
    with pytest.raises(ToolError, match="no tool named 'does_not_exist'"):
        await servers.manager.call(servers.modern, "does_not_exist", {}, organisation=ORG)
    # The connection survives error results.
    assert await tools["echo"].invoke({"text": "still here"}, ctx()) == "still here"


async def test_results_are_capped(servers: Servers) -> None:
    tools = await specs(servers.manager, servers.modern)
    text = await tools["big"].invoke({"size": 50_000}, ctx())
    assert len(text) <= 1000
    assert text.startswith("y" * 100)
    assert "truncated" in text and "50000" in text


async def test_identical_configs_share_one_process(servers: Servers) -> None:
    health = servers.manager.health()
    assert health["t"]["healthy"] and health["t-alias"]["healthy"]
    assert health["t"]["pid"] == health["t-alias"]["pid"] != health["legacy"]["pid"]
    pid_via_alias = await servers.manager.call(servers.modern_alias, "pid", {}, organisation=ORG)
    assert int(pid_via_alias) == health["t"]["pid"]
    alias_tools = await specs(servers.manager, servers.modern_alias)
    assert alias_tools["echo"].plugin_id == "t-alias"


async def test_child_environment_is_the_safe_base_plus_configured_env(servers: Servers) -> None:
    call = servers.manager.call
    assert await call(servers.modern, "env", {"name": "CONFIGURED_VAR"}, organisation=ORG) == "configured"
    assert await call(servers.modern, "env", {"name": SECRET_ENV}, organisation=ORG) == "<unset>"
    assert await call(servers.modern, "env", {"name": "PATH"}, organisation=ORG) == os.environ["PATH"]


async def test_older_protocol_servers_work(servers: Servers) -> None:
    health = servers.manager.health()
    assert health["t"]["protocol"] == "2026-07-28"
    assert health["legacy"]["healthy"] and health["legacy"]["protocol"] == "2025-11-25"
    tools = await specs(servers.manager, servers.legacy)
    assert LONG_DOTTED_NAME in tools
    assert await tools["add"].invoke({"a": 1}, ctx("legacy")) == "2"
    with pytest.raises(ToolError, match="bad input"):
        await tools["fail"].invoke({"message": "bad input"}, ctx("legacy"))


@pytest.mark.parametrize("which", ["modern", "legacy"])
async def test_abandoned_call_is_cancelled_on_the_server(servers: Servers, which: str) -> None:
    ref = getattr(servers, which)
    tag = f"cancel-{which}-{uuid.uuid4().hex[:6]}"
    tools = await specs(servers.manager, ref)
    pid_before = servers.manager.health()[ref.id]["pid"]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        # This is how the orchestration loop enforces tool_timeout_s.
        await asyncio.wait_for(tools["sleep"].invoke({"seconds": 30, "tag": tag}, ctx()), 0.5)
    assert time.monotonic() - started < 2
    await eventually(lambda: (servers.marker_dir / f"{tag}.cancelled").exists(), within_s=5)
    assert (servers.marker_dir / f"{tag}.started").exists()
    assert not (servers.marker_dir / f"{tag}.done").exists()
    # Same connection, same process, still usable.
    assert await tools["echo"].invoke({"text": "after cancel"}, ctx()) == "after cancel"
    assert servers.manager.health()[ref.id]["pid"] == pid_before


@pytest.mark.parametrize("which", ["modern", "legacy"])
async def test_tool_list_follows_server_changes(servers: Servers, which: str) -> None:
    ref = getattr(servers, which)
    name = f"fresh_{which}_{uuid.uuid4().hex[:6]}"
    assert name not in await specs(servers.manager, ref)
    # The server announces the change (notification or listen stream): no TTL involved.
    assert await servers.manager.call(ref, "add_tool", {"name": name}, organisation=ORG) == f"added {name}"

    async def offered() -> bool:
        return name in await specs(servers.manager, ref)

    await eventually(offered, within_s=5)
    tools = await specs(servers.manager, ref)
    assert tools[name].description == f"Added at run time: {name}"
    assert await tools[name].invoke({}, ctx()) == f"dynamic {name}"
    assert name in servers.manager.health()[ref.id]["tools"]


async def test_unknown_name_refreshes_the_list_before_failing(servers: Servers) -> None:
    name = f"silent_{uuid.uuid4().hex[:6]}"
    await servers.manager.call(servers.modern, "add_tool", {"name": name, "notify": False}, organisation=ORG)
    assert name not in await specs(servers.manager, servers.modern)  # cache still fresh
    assert await servers.manager.call(servers.modern, name, {}, organisation=ORG) == f"dynamic {name}"
    assert name in await specs(servers.manager, servers.modern)


# ---------------------------------------------------------------------------------------
# Tests below own their manager: they kill servers or need special settings.


async def test_tool_list_ttl_expiry_refetches() -> None:
    ref = server_ref("ttl")
    manager = McpManager(list_ttl_s=0.3)
    try:
        await manager.start(placed(ref))
        name = f"late_{uuid.uuid4().hex[:6]}"
        await manager.call(ref, "add_tool", {"name": name, "notify": False}, organisation=ORG)
        assert name not in await specs(manager, ref)
        await asyncio.sleep(0.4)
        assert name in await specs(manager, ref)
    finally:
        await manager.aclose()


async def test_crashed_or_killed_server_is_restarted(tmp_path: Path) -> None:
    ref = server_ref("crashy")
    manager = McpManager(connect_timeout_s=15)
    try:
        await manager.start(placed(ref))
        first_pid = manager.health()["crashy"]["pid"]
        tools = await specs(manager, ref)

        # A crash during a call is that call's tool error, with the reason...
        with pytest.raises(ToolError, match="exited with code 3"):
            await tools["crash"].invoke({}, ctx())
        assert not process_alive(first_pid)
        # ...and the very next call gets a fresh process.
        second_pid = int(await tools["pid"].invoke({}, ctx()))
        assert second_pid != first_pid
        assert manager.health()["crashy"]["healthy"]

        # Killed from outside while idle: noticed from the process itself, not only at the
        # next call, and that call gets a new process instead of an error.
        os.kill(second_pid, signal.SIGKILL)
        await eventually(lambda: manager.health()["crashy"]["restarts"] == 2, within_s=3)
        third_pid = int(await tools["pid"].invoke({}, ctx()))
        assert third_pid not in (first_pid, second_pid)
        assert manager.health()["crashy"]["error"] is None
    finally:
        await manager.aclose()


async def test_a_server_back_after_a_crash_still_tells_why_it_failed(tmp_path: Path) -> None:
    ref = server_ref("crashy")
    manager = McpManager(connect_timeout_s=15)
    try:
        await manager.start(placed(ref))
        assert manager.health()["crashy"]["last_error"] is None
        tools = await specs(manager, ref)
        with pytest.raises(ToolError, match="exited with code 3"):
            await tools["crash"].invoke({}, ctx())
        await tools["pid"].invoke({}, ctx())
        health = manager.health()["crashy"]
        # Back and healthy, with no current error, yet the operator still sees the last failure.
        assert health["healthy"] and health["error"] is None
        assert "exited with code 3" in health["last_error"]
        assert health["last_error_at"] is not None
    finally:
        await manager.aclose()


async def test_servers_that_cannot_start_do_not_block_start_up() -> None:
    failing = PluginRef.model_validate(
        {
            "id": "broken",
            "mcp": {
                "command": [
                    sys.executable,
                    "-c",
                    "import sys; sys.stderr.write('missing CRM_URL setting, tried postgresql://app:hunter2@db.internal/crm\\n'); sys.exit(2)",
                ]
            },
        }
    )
    missing = PluginRef.model_validate(
        {"id": "missing", "mcp": {"command": ["/nonexistent/mcp-server"]}}
    )
    silent = PluginRef.model_validate(
        {"id": "silent", "mcp": {"command": [sys.executable, "-c", "import time; time.sleep(60)"]}}
    )
    good = server_ref("good")
    manager = McpManager(connect_timeout_s=3)
    try:
        started = time.monotonic()
        await manager.start(placed(failing, missing, silent, good))
        # Concurrent connects: bounded by one connect timeout, not four.
        assert time.monotonic() - started < 4.5
        # On a loaded machine even the good server may need longer than 3 s; it is retried.
        await eventually(lambda: manager.health()["good"]["healthy"], within_s=30)
        health = manager.health()
        assert not health["broken"]["healthy"]
        assert "exited with code 2" in health["broken"]["error"]
        assert "missing CRM_URL setting" in health["broken"]["error"]
        # The server's own words reach health, logs and the model, but never a password in them.
        assert "postgresql://app:****@db.internal/crm" in health["broken"]["error"]
        assert "hunter2" not in health["broken"]["error"]
        assert not health["missing"]["healthy"]
        assert "not found" in health["missing"]["error"]
        assert not health["silent"]["healthy"]
        await eventually(
            lambda: "no answer within 3 s" in (manager.health()["silent"]["error"] or "")
        )
        for ref in (failing, missing, silent):
            assert await manager.tools_for(ref, organisation=ORG) == []
        assert "echo" in await specs(manager, good)
        started = time.monotonic()
        with pytest.raises(ToolError, match="unavailable"):
            await manager.call(failing, "anything", {}, organisation=ORG)
        assert time.monotonic() - started < 0.5  # fails fast, does not hang
        assert manager.health()["broken"]["state"] == "backoff"
    finally:
        await manager.aclose()


async def test_close_reaps_servers_and_their_children() -> None:
    tag = uuid.uuid4().hex
    ref = server_ref("reaped", env={TAG_ENV: tag})
    legacy = server_ref("reaped-legacy", "--legacy", env={TAG_ENV: tag})
    manager = McpManager()
    await manager.start(placed(ref, legacy))
    server_pid = manager.health()["reaped"]["pid"]
    grandchild = int(await manager.call(ref, "spawn_sleeper", {}, organisation=ORG))
    grandchild_legacy = int(await manager.call(legacy, "spawn_sleeper", {}, organisation=ORG))
    assert process_alive(grandchild) and process_alive(grandchild_legacy)
    assert len(tagged_processes(tag)) == 4
    await manager.aclose()
    assert not process_alive(server_pid)
    assert not process_alive(grandchild) and not process_alive(grandchild_legacy)
    assert tagged_processes(tag) == []
    assert manager.health() == {}
