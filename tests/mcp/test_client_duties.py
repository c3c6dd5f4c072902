"""What real MCP servers rely on a client for, against real server processes (issue 10).

Session recovery over streamable HTTP, a process watched beyond its pipe, probes that
servers ignore, tools that need MCP tasks, the cached tool list while reconnecting,
sampling attribution, roots, elicitation, resources, and quiet, truthful logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from pathlib import Path

import pytest

from runtime.config import PluginRef
from runtime.mcp import McpManager
from runtime.plugin_host.tool import (
    SamplingRequest,
    SamplingResult,
    ToolContext,
    ToolError,
    ToolResult,
)
from tests.mcp.mcp_helpers import (
    ORG,
    TAG_ENV,
    TEST_SERVER,
    HttpServer,
    ctx,
    eventually,
    http_ref,
    placed,
    server_ref,
    start_http_server,
    tagged_processes,
)

# -- session recovery over streamable HTTP ---------------------------------------------------------


@pytest.mark.parametrize("refusal", ["404", "400"])
async def test_a_call_after_the_server_restarted_gets_a_new_session(tmp_path: Path, refusal: str) -> None:
    # 404 is the spec's answer to an unknown session; servers on other SDKs answer 400.
    flags = ("--legacy",) if refusal == "404" else ("--legacy", "--session-400")
    server = start_http_server(tmp_path, *flags)
    ref = http_ref("kb", server)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        assert manager.health()["kb"]["protocol"] == "2025-11-25"  # sessions exist only there
        assert await manager.call(ref, "echo", {"text": "before"}, organisation=ORG) == "before"
        server.stop()
        server.restart()
        # At once, before anything noticed: the call meets the refusal, and goes through anyway.
        assert await manager.call(ref, "echo", {"text": "after"}, organisation=ORG) == "after"
        health = manager.health()["kb"]
        assert health["healthy"] and health["restarts"] == 1 and health["error"] is None
        assert await manager.call(ref, "add", {"a": 1, "b": 2}, organisation=ORG) == "3"
    finally:
        await manager.aclose()
        server.stop()


@pytest.mark.parametrize("refusal", ["404", "400"])
async def test_an_idle_connection_notices_the_restart_by_itself(tmp_path: Path, refusal: str) -> None:
    flags = ("--legacy",) if refusal == "404" else ("--legacy", "--session-400")
    server = start_http_server(tmp_path, *flags)
    ref = http_ref("kb", server)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        server.stop()
        server.restart()
        # Nobody calls: the session's own stream finds the session gone and a new one is made.
        await eventually(lambda: manager.health()["kb"]["restarts"] == 1, within_s=8)
        await eventually(lambda: manager.health()["kb"]["healthy"], within_s=5)
        started = time.monotonic()
        assert await manager.call(ref, "echo", {"text": "fresh"}, organisation=ORG) == "fresh"
        assert time.monotonic() - started < 1
    finally:
        await manager.aclose()
        server.stop()


async def test_health_says_when_an_idle_server_is_gone(tmp_path: Path) -> None:
    server = start_http_server(tmp_path, "--legacy")
    ref = http_ref("kb", server)
    manager = McpManager(backoff_initial_s=0.2, backoff_max_s=0.5)
    try:
        await manager.start(placed(ref))
        server.stop()
        await eventually(lambda: not manager.health()["kb"]["healthy"], within_s=8)
        assert manager.health()["kb"]["state"] in ("reconnecting", "backoff")
        server.restart()
        await eventually(lambda: manager.health()["kb"]["healthy"], within_s=10)
        assert await manager.call(ref, "echo", {"text": "back"}, organisation=ORG) == "back"
    finally:
        await manager.aclose()
        server.stop()


# -- the process, not only its pipe -----------------------------------------------------------------


async def test_a_server_dying_while_its_child_holds_the_pipe_is_noticed_at_once() -> None:
    tag = uuid.uuid4().hex
    # As launcher scripts do: a background child inherits the pipes, then the server takes over.
    command = ["sh", "-c", f"sleep 60 & exec {sys.executable} {TEST_SERVER}"]
    ref = PluginRef.model_validate({"id": "holder", "mcp": {"command": command, "env": {TAG_ENV: tag}}})
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        first_pid = manager.health()["holder"]["pid"]
        assert len(tagged_processes(tag)) == 2  # the server and the sleep holding its stdout
        started = time.monotonic()
        with pytest.raises(ToolError, match="exited with code 3"):
            await asyncio.wait_for(manager.call(ref, "crash", {}, organisation=ORG), 10)
        assert time.monotonic() - started < 2  # not the call's whole timeout
        assert not manager.health()["holder"]["healthy"] or manager.health()["holder"]["pid"] != first_pid
        # The next call gets a new server, and the old group (the sleep) is gone.
        assert int(await manager.call(ref, "pid", {}, organisation=ORG)) != first_pid
        await eventually(lambda: len(tagged_processes(tag)) == 2, within_s=5)
    finally:
        await manager.aclose()
    assert tagged_processes(tag) == []


# -- probes that servers ignore ------------------------------------------------------------------------


async def test_a_stdio_server_that_ignores_unknown_requests_connects_promptly() -> None:
    ref = server_ref("quiet", "--ignore-unknown", connect_timeout_s=6, probe_timeout_s=1)
    manager = McpManager()
    try:
        started = time.monotonic()
        await manager.start(placed(ref), wait_s=6)
        assert manager.health()["quiet"]["healthy"], manager.health()["quiet"]
        assert time.monotonic() - started < 5
        assert manager.health()["quiet"]["protocol"] == "2025-11-25"
        assert await manager.call(ref, "echo", {"text": "hi"}, organisation=ORG) == "hi"
    finally:
        await manager.aclose()


async def test_an_http_server_that_ignores_unknown_requests_connects_promptly(tmp_path: Path) -> None:
    server = start_http_server(tmp_path, "--ignore-unknown")
    ref = http_ref("quiet", server, probe_timeout_s=1)
    manager = McpManager()
    try:
        started = time.monotonic()
        await manager.start(placed(ref), wait_s=10)
        assert manager.health()["quiet"]["healthy"], manager.health()["quiet"]
        assert time.monotonic() - started < 5
        assert await manager.call(ref, "echo", {"text": "hi"}, organisation=ORG) == "hi"
    finally:
        await manager.aclose()
        server.stop()


async def test_connect_timeouts_are_per_server() -> None:
    silent = PluginRef.model_validate(
        {"id": "silent", "mcp": {"command": [sys.executable, "-c", "import time; time.sleep(60)"], "connect_timeout_s": 1}}
    )
    manager = McpManager(connect_timeout_s=30)
    try:
        await manager.start(placed(silent), wait_s=5)
        await eventually(lambda: "no answer within 1 s" in (manager.health()["silent"]["error"] or ""), within_s=6)
    finally:
        await manager.aclose()


async def test_a_slow_server_is_reported_starting_and_holds_nothing_up() -> None:
    silent = PluginRef.model_validate(
        {"id": "silent", "mcp": {"command": [sys.executable, "-c", "import time; time.sleep(60)"]}}
    )
    good = server_ref("good")
    manager = McpManager(startup_wait_s=4)
    try:
        started = time.monotonic()
        await manager.start(placed(silent, good))
        assert time.monotonic() - started < 4.5  # not the 10 s connect timeout
        await eventually(lambda: manager.health()["good"]["healthy"], within_s=9)  # slow on a loaded machine
        health = manager.health()
        assert health["silent"]["state"] == "starting" and not health["silent"]["healthy"]
        started = time.monotonic()
        assert await manager.tools_for(silent, organisation=ORG) == []  # does not wait for it either
        assert time.monotonic() - started < 0.5
    finally:
        await manager.aclose()


# -- tools that need MCP tasks -----------------------------------------------------------------------


async def test_task_required_tools_are_never_offered_and_say_why(tmp_path: Path) -> None:
    server = start_http_server(tmp_path, "--legacy")
    refs = [server_ref("tasks", "--legacy"), http_ref("tasks-http", server)]
    manager = McpManager()
    try:
        await manager.start(placed(*refs))
        for ref in refs:
            offered = {spec.name for spec in await manager.tools_for(ref, organisation=ORG)}
            assert "echo" in offered and "long_job" not in offered
            (unsupported,) = manager.health()[ref.id]["unsupported_tools"]
            assert unsupported["name"] == "long_job" and "MCP task" in unsupported["reason"]
            with pytest.raises(ToolError, match="must run as an MCP task"):
                await manager.call(ref, "long_job", {}, organisation=ORG)
    finally:
        await manager.aclose()
        server.stop()


# -- reconnecting with the cached tool list -------------------------------------------------------------


async def test_two_crashes_in_the_backoff_window_keep_the_tools_offered(caplog: pytest.LogCaptureFixture) -> None:
    ref = server_ref("crashy")
    manager = McpManager(backoff_initial_s=1.0)
    caplog.set_level(logging.WARNING, logger="plugway.mcp")
    try:
        await manager.start(placed(ref))
        for _ in range(2):
            with pytest.raises(ToolError, match="exited with code 3"):
                await manager.call(ref, "crash", {}, organisation=ORG)
        # The second drop is backed off: the server is not up, yet its tools are still offered...
        assert manager.health()["crashy"]["state"] in ("backoff", "reconnecting")
        offered = {spec.name for spec in await manager.tools_for(ref, organisation=ORG)}
        assert {"echo", "pid", "crash"} <= offered
        # ...and a call made now waits for the reconnection instead of failing.
        started = time.monotonic()
        assert await manager.call(ref, "echo", {"text": "waited"}, organisation=ORG) == "waited"
        assert time.monotonic() - started < 10
        crashes = [r for r in caplog.records if r.levelno == logging.WARNING and "exited with code 3" in r.getMessage()]
        assert len(crashes) >= 2
    finally:
        await manager.aclose()


async def test_http_server_down_and_back_within_a_call(tmp_path: Path) -> None:
    server = start_http_server(tmp_path, "--legacy")
    ref = http_ref("kb", server)
    manager = McpManager(backoff_initial_s=0.5, backoff_max_s=1)
    try:
        await manager.start(placed(ref))
        server.stop()
        await eventually(lambda: not manager.health()["kb"]["healthy"], within_s=8)
        assert "echo" in {spec.name for spec in await manager.tools_for(ref, organisation=ORG)}
        call = asyncio.ensure_future(manager.call(ref, "echo", {"text": "patient"}, organisation=ORG))
        await asyncio.sleep(0.2)
        server.restart()
        # The call waits for attempts until one fails after it started or one succeeds.
        try:
            assert await asyncio.wait_for(call, 10) == "patient"
        except ToolError as exc:
            # An attempt that failed while the server was still starting: the call says so.
            assert "unavailable" in str(exc)
            await eventually(lambda: manager.health()["kb"]["healthy"], within_s=10)
            assert await manager.call(ref, "echo", {"text": "patient"}, organisation=ORG) == "patient"
    finally:
        await manager.aclose()
        server.stop()


# -- server requests: sampling, roots, elicitation --------------------------------------------------------


def answering(name: str, calls: list[SamplingRequest]) -> ToolContext:
    async def sample(request: SamplingRequest) -> SamplingResult:
        calls.append(request)
        await asyncio.sleep(0.3)  # both calls are in flight at once
        return SamplingResult(text=f"answer for {name}", model="m", stop_reason="endTurn")

    return ToolContext(organisation_id=name, plugin_id="s", request_id=name, sample=sample)


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_sampling_goes_to_the_call_that_asked_over_http(tmp_path: Path, era: str) -> None:
    server = start_http_server(tmp_path, *(("--legacy",) if era == "legacy" else ()))
    ref = http_ref("s", server)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        first: list[SamplingRequest] = []
        second: list[SamplingRequest] = []
        answers = await asyncio.gather(
            manager.call(ref, "ask_model", {"question": "first?"}, answering("first", first), organisation=ORG),
            manager.call(ref, "ask_model", {"question": "second?"}, answering("second", second), organisation=ORG),
        )
        assert answers[0].startswith("the model said: answer for first (endTurn")
        assert answers[1].startswith("the model said: answer for second (endTurn")
        assert [r.messages for r in first] == [[{"role": "user", "content": "first?"}]]
        assert first[0].system == "Answer briefly." and first[0].max_tokens == 50
        assert [r.messages for r in second] == [[{"role": "user", "content": "second?"}]]
    finally:
        await manager.aclose()
        server.stop()


async def test_parallel_sampling_calls_on_a_legacy_stdio_server_each_get_their_own_answer() -> None:
    # Over stdio a pre-2026 server's sampling request names no call: the connection serves
    # its calls one at a time, so a request is the call's it is serving, never another's.
    ref = server_ref("s", "--legacy")
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        first: list[SamplingRequest] = []
        second: list[SamplingRequest] = []
        answers = await asyncio.gather(
            manager.call(ref, "ask_model_later", {"question": "first?", "delay": 0.2}, answering("first", first), organisation=ORG),
            manager.call(ref, "ask_model", {"question": "second?"}, answering("second", second), organisation=ORG),
        )
        assert answers[0].startswith("the model said: answer for first (endTurn")
        assert answers[1].startswith("the model said: answer for second (endTurn")
        assert [r.messages for r in first] == [[{"role": "user", "content": "first?"}]]
        assert [r.messages for r in second] == [[{"role": "user", "content": "second?"}]]
        with pytest.raises(ToolError, match="No model is available"):
            await manager.call(ref, "ask_model", {"question": "no model?"}, ctx(), organisation=ORG)
    finally:
        await manager.aclose()


async def test_roots_come_from_the_config(tmp_path: Path) -> None:
    ref = server_ref("r", "--legacy", roots=[str(tmp_path), "file:///srv/shared"])
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        roots = json.loads(await manager.call(ref, "my_roots", {}, organisation=ORG))
        assert roots == [tmp_path.as_uri(), "file:///srv/shared"]
        assert manager.describe()["r"]["roots"] == roots
    finally:
        await manager.aclose()


async def test_elicitation_is_declined_with_a_reason() -> None:
    ref = server_ref("e", "--legacy")
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        with pytest.raises(ToolError, match="no person to ask.*elicitation is declined"):
            await manager.call(ref, "confirm", {}, organisation=ORG)
    finally:
        await manager.aclose()


# -- resources, prompts, annotations ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_resources_are_readable_through_a_tool(tmp_path: Path, transport: str) -> None:
    server: HttpServer | None = None
    if transport == "http":
        server = start_http_server(tmp_path)
        ref = http_ref("notes", server)
    else:
        ref = server_ref("notes")
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        tools = {spec.name: spec for spec in await manager.tools_for(ref, organisation=ORG)}
        reader = tools["read_resource"]
        assert "notes://welcome (welcome): How to use the notes" in reader.description
        assert "notes://{topic}" in reader.description
        assert reader.annotations == {"readOnlyHint": True}
        # A tool result links to a resource; the model can follow the link.
        found = await tools["find_note"].invoke({"topic": "cats"}, ctx())
        assert "<notes://cats>" in found
        assert await reader.invoke({"uri": "notes://cats"}, ctx()) == "Everything about cats."
        image = await reader.invoke({"uri": "images://pixel.png"}, ctx())
        assert isinstance(image, ToolResult) and image.images[0].name == "pixel.png"
        with pytest.raises(ToolError, match="Cannot read 'notes:/nowhere'"):
            await reader.invoke({"uri": "notes:/nowhere"}, ctx())
        described = manager.describe()["notes"]
        assert described["resource_template_list"][0]["uri_template"] == "notes://{topic}"
        assert described["prompt_list"][0]["name"] == "summarise"
        assert described["prompt_list"][0]["arguments"] == [{"name": "topic", "description": None, "required": True}]
        assert manager.health()["notes"]["prompts"] == ["summarise"]
        annotated = {t["name"]: t for t in described["tool_details"]}
        assert annotated["delete_record"]["annotations"] == {"readOnlyHint": False, "destructiveHint": True}
        assert annotated["read_resource"]["public_name"] == "notes__read_resource"
        assert tools["delete_record"].annotations == {"readOnlyHint": False, "destructiveHint": True}
    finally:
        await manager.aclose()
        if server is not None:
            server.stop()


# -- logs --------------------------------------------------------------------------------------------------


async def test_http_calls_log_no_line_per_request_and_crashes_no_stale_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Legacy: the discovery probe is refused with HTTP 400 on the way in.
    server = start_http_server(tmp_path, "--legacy")
    ref = http_ref("kb", server)
    manager = McpManager()
    try:
        await manager.start(placed(ref))
        caplog.clear()
        for n in range(3):
            assert await manager.call(ref, "echo", {"text": str(n)}, organisation=ORG) == str(n)
        assert [r for r in caplog.records if r.name.startswith("httpx")] == []
        server.stop()
        def lost() -> list[str]:
            return [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]

        # The status turns and the line is logged by the connection's task: wait for both.
        await eventually(lambda: not manager.health()["kb"]["healthy"] and lost(), within_s=20)
        assert all("HTTP 400" not in line for line in lost())
        assert "HTTP 400" not in (manager.health()["kb"]["error"] or "")
    finally:
        await manager.aclose()
        server.stop()
