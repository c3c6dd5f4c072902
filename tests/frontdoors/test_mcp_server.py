"""``/mcp`` end to end: the ``mcp`` SDK's own client over streamable HTTP against a real gateway.

Both protocol eras the SDK speaks are exercised where they differ: ``auto``
negotiates 2026-07-28 (stateless), ``legacy`` forces the 2025 handshake with
a session and a GET stream.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import openai
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from sqlmodel import Session, select

from runtime.storage.keys import list_keys, revoke_key
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fixtures.testkit_plugin import RED_DOT
from tests.support import Gateways, GatewayServer, make_settings

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = ROOT / "tests" / "fixtures" / "mcp_test_server.py"
MODES = ["auto", "legacy"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def connected(
    server: GatewayServer, key: str, *, mode: str = "auto", on_response: Callable[[Any], Awaitable[None]] | None = None, **options: Any
) -> AsyncIterator[Client]:
    hooks = {"response": [on_response]} if on_response is not None else None
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20, event_hooks=hooks) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode, **options) as client:  # type: ignore[arg-type]
            yield client


async def all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def usage_rows(server: GatewayServer, source: str = "mcp") -> list[UsageRecord]:
    server.flush_usage()
    with Session(server.gateway.engine) as session:
        return list(session.exec(select(UsageRecord).where(UsageRecord.source == source).order_by(UsageRecord.id)))


# -- listing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_lists_the_tools_the_loop_offers_a_model_with_the_same_names_and_schemas(
    gateway: GatewayServer, upstream: FakeOpenAI, mode: str
) -> None:
    key = gateway.mint()
    upstream.enqueue(Reply(text="no tools needed"))
    await asyncio.to_thread(
        openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0).chat.completions.create,
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
    )
    offered = {tool["function"]["name"]: tool["function"] for tool in upstream.requests[0]["tools"]}

    async with connected(gateway, key, mode=mode) as client:
        assert (client.protocol_version in MODERN_PROTOCOL_VERSIONS) is (mode == "auto")
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        listed = {tool.name: tool for tool in await all_tools(client)}

    assert set(listed) == set(offered)
    assert {"clock__now", "calculator__evaluate", "testkit__slow", "testkit__picture"} <= set(listed)
    for name, tool in listed.items():
        assert tool.input_schema == offered[name]["parameters"]
        assert tool.description == offered[name]["description"]


@pytest.mark.gateway(plugins=[{"id": "catalogue"}, {"id": "calculator"}])
async def test_a_large_catalogue_is_paged_and_never_replaced_by_tool_search(gateway: GatewayServer) -> None:
    async with connected(gateway, gateway.mint()) as client:
        first = await client.list_tools()
        assert len(first.tools) == 100 and first.next_cursor is not None
        tools = await all_tools(client)
        with pytest.raises(MCPError) as info:
            await client.list_tools(cursor="no-such-tool", cache_mode="refresh")
    names = [tool.name for tool in tools]
    assert len(names) == len(set(names)) == 151
    assert "calculator__evaluate" in names and "catalogue__weather_forecast" in names
    assert not any(name.startswith("plugway__") for name in names)
    assert info.value.code == types.INVALID_PARAMS and "list again" in info.value.message


# -- calling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_runs_the_tool_and_a_json_object_result_is_also_structured(gateway: GatewayServer, mode: str) -> None:
    async with connected(gateway, gateway.mint(), mode=mode) as client:
        result = await client.call_tool("calculator__evaluate", {"expression": "6*7"})
        context = await client.call_tool("testkit__whoami", {})
        echoed = await client.call_tool("testkit__echo", {"text": "{not json", "times": 1})
    assert not result.is_error
    assert result.structured_content == {"expression": "6*7", "result": 42}
    assert '"result":42' in text_of(result)
    assert context.structured_content is not None
    assert context.structured_content["organisation"] == "acme"
    assert context.structured_content["plugin"] == "testkit"
    assert context.structured_content["config"] == {"flavour": "vanilla"}
    assert context.structured_content["request_id"].startswith("req_")
    assert text_of(echoed) == "{not json" and echoed.structured_content is None


@pytest.mark.gateway(orchestration={"tool_timeout_s": 0.5})
async def test_failures_come_back_as_error_results_the_model_can_read(gateway: GatewayServer) -> None:
    async with connected(gateway, gateway.mint()) as client:
        refused = await client.call_tool("testkit__refuse", {"reason": "not today"})
        broken = await client.call_tool("testkit__boom", {})
        invalid = await client.call_tool("calculator__evaluate", {"expr": "1+1"})
        mistyped = await client.call_tool("testkit__slow", {"seconds": "soon"})
        started = time.monotonic()
        late = await client.call_tool("testkit__slow", {"seconds": 10})
        waited = time.monotonic() - started
    assert refused.is_error and text_of(refused) == "refused: not today"
    assert broken.is_error and "RuntimeError: the flux capacitor overheated" in text_of(broken)
    assert invalid.is_error and "schema" in text_of(invalid) and "'expr' was unexpected" in text_of(invalid)
    assert mistyped.is_error and "seconds" in text_of(mistyped)
    assert late.is_error and "did not finish within 0.5" in text_of(late)
    assert waited < 5
    assert all(r.structured_content is None for r in (refused, broken, invalid, mistyped, late))


async def test_an_unknown_tool_is_a_protocol_error(gateway: GatewayServer) -> None:
    async with connected(gateway, gateway.mint()) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("plugway__find_tools", {"query": "time"})
    assert info.value.code == types.INVALID_PARAMS
    assert "Unknown tool: 'plugway__find_tools'" in info.value.message


@pytest.mark.parametrize("mode", MODES)
async def test_images_are_image_content_and_progress_reaches_the_client(gateway: GatewayServer, mode: str) -> None:
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async with connected(gateway, gateway.mint(), mode=mode) as client:
        picture = await client.call_tool("testkit__picture", {})
        steps = await client.call_tool("testkit__steps", {"count": 3, "seconds": 0.05}, progress_callback=on_progress)
    images = [block for block in picture.content if isinstance(block, types.ImageContent)]
    assert [(image.mime_type, image.data) for image in images] == [("image/png", RED_DOT)]
    assert "a red dot" in text_of(picture)
    assert text_of(steps) == "finished 3 steps"
    assert reports == [(1, 3, "step 1 of 3"), (2, 3, "step 2 of 3"), (3, 3, "step 3 of 3")]


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.gateway(key_cache_ttl_s=0.3)
async def test_no_key_a_bad_key_and_a_revoked_key_are_refused_before_any_message(gateway: GatewayServer) -> None:
    url = f"{gateway.url}/mcp"
    key = gateway.mint("bare")
    async with httpx2.AsyncClient(timeout=10) as http:
        missing = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
        wrong = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer pw_wrong"})
        basic = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS, auth=(key, ""))
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "mcp-session-id" not in response.headers  # no session was opened
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert basic.status_code == 200 and "mcp-session-id" in basic.headers  # HTTP Basic, key as user name

    # The SDK's client reports any HTTP error status as one generic error.
    with pytest.raises(Exception) as refused_client:
        async with connected(gateway, "pw_wrong"):
            pass
    assert any(isinstance(leaf, MCPError) for leaf in leaves(refused_client.value))

    async with connected(gateway, key, mode="legacy") as client:
        await client.list_tools()
        (row,) = list_keys(gateway.gateway.engine, "bare")
        assert revoke_key(gateway.gateway.engine, row.id)
        await asyncio.sleep(0.4)
        with pytest.raises(Exception) as revoked:  # the open session stops working too
            await client.list_tools(cache_mode="refresh")
    assert any(isinstance(leaf, MCPError) for leaf in leaves(revoked.value))
    async with httpx2.AsyncClient(timeout=10) as http:
        after = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"})
    assert after.status_code == 401


@pytest.mark.gateway(extra_orgs=[{"id": "beta", "plugins": [{"id": "clock"}]}])
async def test_each_key_sees_only_its_own_organisations_tools_and_sessions(gateway: GatewayServer) -> None:
    async with connected(gateway, gateway.mint("beta")) as client:
        names = {tool.name for tool in await all_tools(client)}
        with pytest.raises(MCPError) as info:
            await client.call_tool("testkit__whoami", {})
    assert names and all(name.startswith("clock__") for name in names)
    assert info.value.code == types.INVALID_PARAMS
    async with connected(gateway, gateway.mint("bare")) as client:
        assert await all_tools(client) == []

    # A handshake session belongs to the key that opened it.
    url = f"{gateway.url}/mcp"
    async with httpx2.AsyncClient(timeout=10) as http:
        opened = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {gateway.mint()}"})
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        hijack = await http.post(
            url,
            json=listing,
            headers={**MCP_HEADERS, "Authorization": f"Bearer {gateway.mint('beta')}", "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"},
        )
    assert hijack.status_code == 404


# -- limits and records ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_call_counts_against_the_keys_rate_limit(gateway: GatewayServer, mode: str) -> None:
    async with connected(gateway, gateway.mint(rpm=2), mode=mode) as client:
        for _ in range(3):  # listing spends none of the limit
            await client.list_tools(cache_mode="refresh")
        with pytest.raises(MCPError) as unknown:  # nor does a call that cannot run
            await client.call_tool("nope__nothing", {})
        assert unknown.value.code == types.INVALID_PARAMS
        for _ in range(2):
            assert not (await client.call_tool("clock__now", {})).is_error
        with pytest.raises(MCPError) as info:
            await client.call_tool("clock__now", {})
    assert info.value.code == -32001
    assert "rate limit" in info.value.message.lower()
    assert info.value.data["status"] == 429 and info.value.data["code"] == "rate_limit_exceeded"
    assert info.value.data["retry_after_s"] > 0


@pytest.mark.gateway(extra_orgs=[{"id": "thrifty", "monthly_budget_usd": 1.0, "plugins": [{"id": "clock"}]}])
async def test_a_spent_budget_refuses_listing_and_calls(gateway: GatewayServer) -> None:
    key = gateway.mint("thrifty")
    async with connected(gateway, key) as client:
        assert await all_tools(client)
        with Session(gateway.gateway.engine) as session:
            session.add(UsageRecord(request_id="spent", organisation_id="thrifty", model="gpt-test", cost_usd=5.0))
            session.commit()
        await asyncio.sleep(2.1)  # the budget guard reads the database at most every 2 s
        with pytest.raises(MCPError) as listing:
            await client.list_tools(cache_mode="refresh")
        with pytest.raises(MCPError) as call:
            await client.call_tool("clock__now", {})
    for refused in (listing.value, call.value):
        assert refused.code == -32001 and "budget" in refused.message
        assert refused.data["status"] == 402 and refused.data["code"] == "insufficient_credits"
    assert usage_rows(gateway) == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_the_client_cancels_stops_and_is_recorded_as_cancelled(gateway: GatewayServer, mode: str) -> None:
    async with connected(gateway, gateway.mint(), mode=mode) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.call_tool("testkit__slow", {"seconds": 1.5})
        assert time.monotonic() - started < 1
        assert not (await client.call_tool("clock__now", {})).is_error  # the session goes on

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = usage_rows(gateway)
        if len(rows) == 2:
            break
        await asyncio.sleep(0.1)
    statuses = {row.model: row.status for row in rows}
    assert statuses == {"testkit__slow": "cancelled", "clock__now": "ok"}
    slow = next(row for row in rows if row.model == "testkit__slow")
    assert slow.latency_ms < 1400  # stopped when cancelled, not run to its end


async def test_each_call_is_recorded_with_source_mcp(gateway: GatewayServer) -> None:
    key = gateway.mint()
    async with connected(gateway, key) as client:
        await client.call_tool("calculator__evaluate", {"expression": "1+1"})
        await client.call_tool("testkit__refuse", {"reason": "no"})
        await client.call_tool("calculator__evaluate", {})
        await client.list_tools()
    rows = usage_rows(gateway)
    assert [(row.model, row.status) for row in rows] == [
        ("calculator__evaluate", "ok"),
        ("testkit__refuse", "tool_error"),
        ("calculator__evaluate", "invalid_arguments"),
    ]
    (key_row,) = list_keys(gateway.gateway.engine, "acme")
    assert all(row.key_id == key_row.id and row.organisation_id == "acme" and row.tool_calls == 1 for row in rows)
    assert all(row.latency_ms > 0 and row.total_tokens == 0 and row.request_id.startswith("req_") for row in rows)
    assert len({row.request_id for row in rows}) == 3


# -- list_changed ------------------------------------------------------------------------------


def watch_status(server: GatewayServer) -> dict[str, dict[str, int | bool]]:
    (front_door,) = [route.endpoint for route in server.app.routes if getattr(route, "path", None) == "/mcp"]  # type: ignore[attr-defined]
    assert front_door.tools is not None
    status: dict[str, dict[str, int | bool]] = front_door.tools.changes.status()
    return status


async def until_nobody_is_watched(server: GatewayServer) -> None:
    """Clients that left are forgotten, and their organisations' watchers stop."""
    idle = {"listeners": 0, "sessions": 0, "watching": False}
    deadline = time.monotonic() + 5
    while any(state != idle for state in watch_status(server).values()):
        assert time.monotonic() < deadline, watch_status(server)
        await asyncio.sleep(0.1)


def changing_plugins(tmp_path: Path) -> list[dict[str, Any]]:
    return [{"id": "clock"}, {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "env": {"MCP_TEST_MARKER_DIR": str(tmp_path)}}}]


@pytest.fixture
def changing_gateway(tmp_path: Path, gateways: Gateways) -> GatewayServer:
    return gateways.start(plugins=changing_plugins(tmp_path), extra_orgs=[{"id": "beta", "plugins": [{"id": "clock"}]}])


async def test_an_mcp_backed_plugins_results_keep_their_structure_and_images(changing_gateway: GatewayServer) -> None:
    async with connected(changing_gateway, changing_gateway.mint()) as client:
        forecast = await client.call_tool("tk__forecast", {"city": "Lisbon"})
        picture = await client.call_tool("tk__picture", {"caption": "tiny"})
        failed = await client.call_tool("tk__fail", {"message": "no forecast today"})
    assert forecast.structured_content == {"city": "Lisbon", "temperature_c": 21.5, "conditions": "sunny"}
    assert [block.mime_type for block in picture.content if isinstance(block, types.ImageContent)] == ["image/png"]
    assert "tiny" in text_of(picture)
    assert failed.is_error and "no forecast today" in text_of(failed)


async def test_a_backing_servers_new_tool_reaches_a_handshake_session_as_list_changed(changing_gateway: GatewayServer) -> None:
    notified = asyncio.Event()
    listening = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            notified.set()

    async def on_response(response: Any) -> None:
        # The server answers the GET once its transport holds the stream notifications go down.
        if response.request.method == "GET" and response.status_code == 200:
            listening.set()

    async with connected(changing_gateway, changing_gateway.mint(), mode="legacy", message_handler=on_message, on_response=on_response) as client:
        before = {tool.name for tool in await all_tools(client)}
        assert "tk__add_tool" in before and "tk__fresh_legacy" not in before
        await asyncio.wait_for(listening.wait(), timeout=10)
        assert not notified.is_set()
        added = await client.call_tool("tk__add_tool", {"name": "fresh_legacy"})
        assert not added.is_error
        await asyncio.wait_for(notified.wait(), timeout=10)
        after = {tool.name for tool in await all_tools(client)}
        assert after - before == {"tk__fresh_legacy"}
        assert text_of(await client.call_tool("tk__fresh_legacy", {})) == "dynamic fresh_legacy"
        assert watch_status(changing_gateway)["acme"] == {"listeners": 0, "sessions": 1, "watching": True}
    await until_nobody_is_watched(changing_gateway)  # the client deleted its session on leaving


async def test_a_backing_servers_new_tool_reaches_listeners_of_that_organisation_only(changing_gateway: GatewayServer) -> None:
    async with (
        connected(changing_gateway, changing_gateway.mint()) as client,
        connected(changing_gateway, changing_gateway.mint("beta")) as other,
        client.listen(tools_list_changed=True) as subscription,
        other.listen(tools_list_changed=True) as other_subscription,
    ):
        assert subscription.honored.tools_list_changed
        await client.call_tool("tk__add_tool", {"name": "fresh_modern"})
        event = await asyncio.wait_for(anext(subscription), timeout=10)
        assert type(event).__name__ == "ToolsListChanged"
        assert "tk__fresh_modern" in {tool.name for tool in await all_tools(client)}
        with pytest.raises(TimeoutError):  # beta's tools did not change
            await asyncio.wait_for(anext(other_subscription), timeout=2.5)
        assert {org: state["listeners"] for org, state in watch_status(changing_gateway).items()} == {"acme": 1, "beta": 1}
    await until_nobody_is_watched(changing_gateway)


async def test_a_backing_servers_sampling_is_answered_by_its_sampling_model_and_billed(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    plugins = [{"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "sampling_model": "gpt-test"}}]
    server = gateways.start(plugins=plugins)
    upstream.enqueue(Reply(text="Lisbon", prompt_tokens=30, completion_tokens=2))
    async with connected(server, server.mint()) as client:
        result = await client.call_tool("tk__ask_model", {"question": "Capital of Portugal?"})
    assert not result.is_error and text_of(result).startswith("the model said: Lisbon")
    assert upstream.requests[0]["messages"][-1] == {"role": "user", "content": "Capital of Portugal?"}
    assert [(row.prompt_tokens, row.completion_tokens) for row in usage_rows(server, "mcp-sampling")] == [(30, 2)]


def test_a_sampling_model_must_be_one_of_the_organisations_models(tmp_path: Path, upstream: FakeOpenAI) -> None:
    from runtime.config import ConfigError

    plugins = [{"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "sampling_model": "gpt-nope"}}]
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.mcp\.sampling_model.*gpt-nope"):
        make_settings(tmp_path, upstream.base_url, plugins=plugins)
