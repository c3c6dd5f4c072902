"""MCP plugins through the whole gateway: openai SDK -> plugway -> fake upstream, tools on real MCP servers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.mcp.mcp_helpers import TAG_ENV, TEST_SERVER, tagged_processes
from tests.support import Gateways, GatewayServer

USER = [{"role": "user", "content": "help"}]
KB_TOKEN = "kb-secret-token"


def tool_contents(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


@pytest.fixture(scope="module")
def kb_http() -> Iterator[str]:
    """The bundled knowledge base over streamable HTTP, with a bearer token."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_servers.knowledge_base", "--transport", "streamable-http", "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", "MCP_SERVER_TOKEN": KB_TOKEN, "KNOWLEDGE_BASE_DB": f"/tmp/plugway-kb-{uuid.uuid4().hex}.db"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def mcp_gateway(tmp_path: Path, upstream: FakeOpenAI, kb_http: str, gateways: Gateways) -> Iterator[tuple[GatewayServer, str]]:
    tag = uuid.uuid4().hex
    plugins = [
        {"id": "calculator"},
        {"id": "crm", "mcp": {"command": [sys.executable, "-m", "mcp_servers.support_crm"], "env": {"SUPPORT_CRM_DB": str(tmp_path / "crm.db"), TAG_ENV: tag}}},
        {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "env": {TAG_ENV: tag}}},
        {"id": "kb", "mcp": {"url": kb_http, "headers": {"Authorization": f"Bearer {KB_TOKEN}"}}},
        {"id": "gone", "mcp": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
    ]
    server = gateways.start(plugins=plugins)
    yield server, tag


def test_mcp_tools_are_injected_and_executed(mcp_gateway: tuple[GatewayServer, str], upstream: FakeOpenAI) -> None:
    server, _ = mcp_gateway
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    upstream.enqueue(
        Reply(tool_calls=[("crm__lookup_customer", {"query": "ana.pereira@example.com"}), ("kb__search_articles", {"query": "refund"}), ("calculator__evaluate", {"expression": "3*3"})]),
        Reply(text="Ana is a gold customer."),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "Ana is a gold customer."
    offered = {t["function"]["name"]: t["function"] for t in upstream.requests[0]["tools"]}
    assert {"crm__lookup_customer", "crm__create_ticket", "kb__search_articles", "tk__echo", "calculator__evaluate"} <= set(offered)
    assert not any(name.startswith("gone__") for name in offered)  # an unreachable server's tools are not offered
    assert offered["crm__lookup_customer"]["parameters"]["required"] == ["query"]
    assert "Find customers" in offered["crm__lookup_customer"]["description"]
    crm, kb, calc = tool_contents(upstream.requests[1])
    assert orjson.loads(crm)["customers"][0]["id"] == "C-1001"
    assert "returns-and-refunds" in kb
    assert orjson.loads(calc)["result"] == 9
    assert all(call["ok"] for call in reply.model_extra["plugway"]["tool_calls"])


def test_mcp_names_are_sanitised_and_callable(mcp_gateway: tuple[GatewayServer, str], upstream: FakeOpenAI) -> None:
    server, _ = mcp_gateway
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    upstream.enqueue(Reply(text="ok"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    long_name = next(t["function"]["name"] for t in upstream.requests[0]["tools"] if t["function"]["name"].startswith("tk__reports"))
    assert len(long_name) <= 64 and "." not in long_name
    upstream.reset()
    upstream.enqueue(Reply(tool_calls=[(long_name, {})]), Reply(text="done"))
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.model_extra["plugway"]["tool_calls"][0]["ok"] is True


def test_streamed_mcp_round_trip_with_error_results(mcp_gateway: tuple[GatewayServer, str], upstream: FakeOpenAI) -> None:
    server, _ = mcp_gateway
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    upstream.enqueue(
        Reply(tool_calls=[("tk__fail", {"message": "warehouse offline"}), ("tk__echo", {"text": "hello"})]),
        Reply(text="One tool failed."),
    )
    chunks = list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "One tool failed."
    failed, echoed = tool_contents(upstream.requests[1])
    assert "warehouse offline" in failed and orjson.loads(failed)["error"]["type"] == "tool_error"
    assert echoed == "hello"


def test_mcp_timeout_is_a_tool_result(mcp_gateway: tuple[GatewayServer, str], upstream: FakeOpenAI) -> None:
    server, _ = mcp_gateway
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("tk__sleep", {"seconds": 30})]), Reply(text="too slow"), Reply(tool_calls=[("tk__echo", {"text": "still here"})]), Reply(text="ok"))
    started = time.monotonic()
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert time.monotonic() - started < 5  # tool_timeout_s is 2 in the tests
    assert reply.choices[0].message.content == "too slow"
    assert orjson.loads(tool_contents(upstream.requests[1])[0])["error"]["type"] == "timeout"
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert tool_contents(upstream.requests[3]) == ["still here"]  # the connection survived the cancellation


def test_killed_stdio_server_costs_one_tool_error_then_comes_back(mcp_gateway: tuple[GatewayServer, str], upstream: FakeOpenAI) -> None:
    server, _ = mcp_gateway
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("tk__pid", {})]), Reply(text="pid"), Reply(tool_calls=[("tk__crash", {})]), Reply(text="it crashed"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    first_pid = int(tool_contents(upstream.requests[1])[0])
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "it crashed"
    assert orjson.loads(tool_contents(upstream.requests[3])[0])["error"]["type"] == "tool_error"
    upstream.reset()
    upstream.enqueue(Reply(tool_calls=[("tk__pid", {})]), Reply(text="back"))
    deadline = time.monotonic() + 10
    while True:
        reply = client.chat.completions.create(model="gpt-test", messages=USER)
        content = tool_contents(upstream.requests[1])[0] if len(upstream.requests) > 1 else ""
        if content.isdigit() or time.monotonic() > deadline:
            break
        upstream.reset()
        upstream.enqueue(Reply(tool_calls=[("tk__pid", {})]), Reply(text="back"))
        time.sleep(0.3)
    assert content.isdigit() and int(content) != first_pid


def test_readyz_reports_mcp_health_and_shutdown_leaves_no_children(tmp_path: Path, upstream: FakeOpenAI, kb_http: str, gateways: Gateways) -> None:
    tag = uuid.uuid4().hex
    plugins = [
        {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)], "env": {TAG_ENV: tag}}},
        {"id": "gone", "mcp": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
    ]
    server = gateways.start(plugins=plugins)
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["status"] == "ready"
    # The public probe names no plugin, command, URL or error: those are for authenticated surfaces.
    assert "mcp" not in ready["checks"] and "gone" not in str(ready)
    assert str(TEST_SERVER) not in str(ready) and "ConnectError" not in str(ready)
    health = server.gateway.mcp.health()
    assert health["tk"]["state"] == "ready" and health["tk"]["healthy"] is True
    assert health["gone"]["healthy"] is False
    assert str(TEST_SERVER) in health["tk"]["target"] and "ConnectError" in health["gone"]["error"]
    assert len(tagged_processes(tag)) >= 1
    server.stop()
    assert tagged_processes(tag) == []


# -- allowed_tools in the configuration -------------------------------------------------------------------


@pytest.fixture
def narrowed(gateways: Gateways) -> GatewayServer:
    plugin = {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)]}, "allowed_tools": ["echo", "add"]}
    return gateways.start(plugins=[plugin])


def test_only_a_plugins_allowed_tools_are_offered_and_others_cannot_be_called(narrowed: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=narrowed.base_url, api_key=narrowed.mint(), max_retries=0, timeout=30)
    upstream.enqueue(
        Reply(tool_calls=[("tk__pid", {}), ("tk__echo", {"text": "hi"})]),
        Reply(text="done"),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert sorted(tool["function"]["name"] for tool in upstream.requests[0]["tools"]) == ["tk__add", "tk__echo"]
    excluded, allowed = tool_contents(upstream.requests[1])
    error = orjson.loads(excluded)["error"]
    assert "tk__pid" in error["message"]
    assert allowed == "hi"
    trace = reply.model_extra["plugway"]["tool_calls"]  # type: ignore[index]
    assert [(call["name"], call["ok"]) for call in trace] == [("tk__pid", False), ("tk__echo", True)]
