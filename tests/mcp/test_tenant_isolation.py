"""Organisations kept apart on MCP servers (issue 21): one connection per organisation unless
the operator declares a server shared, and every server request answered for the call that
caused it, under that call's organisation, model and key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlmodel import Session, select

from runtime.config import PluginRef
from runtime.json_types import JSON
from runtime.mcp import McpManager
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import HttpServer, http_ref, server_ref, start_http_server
from tests.support import Gateways, make_settings


@pytest.fixture
def legacy_http(tmp_path: Path) -> Iterator[HttpServer]:
    # Pre-2026 HTTP: a session per connection, and the counter keeps its count per session.
    server = start_http_server(tmp_path, "--legacy")
    yield server
    server.stop()


def counter(transport: str, http: HttpServer, **mcp: Any) -> PluginRef:
    if transport == "stdio":
        return server_ref("memo", "--legacy", **mcp)
    return http_ref("memo", http, **mcp)


async def counts(manager: McpManager, ref: PluginRef, organisation: str, times: int) -> list[str]:
    return [str(await manager.call(ref, "count", {}, organisation=organisation)) for _ in range(times)]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_each_organisation_gets_its_own_connection_to_a_server(transport: str, legacy_http: HttpServer) -> None:
    ref = counter(transport, legacy_http)
    manager = McpManager()
    try:
        await manager.start([("acme", ref), ("beta", ref)])
        assert await counts(manager, ref, "acme", 2) == ["count=1", "count=2"]
        # beta's first call sees nothing of acme's: its own process, or its own session.
        assert await counts(manager, ref, "beta", 1) == ["count=1"]
        assert await counts(manager, ref, "acme", 1) == ["count=3"]
        health = manager.health()
        assert set(health) == {"memo@acme", "memo@beta"}
        assert health["memo@acme"]["organisations"] == ["acme"] and not health["memo@acme"]["shared"]
        assert all(entry["healthy"] for entry in health.values())
        if transport == "stdio":
            assert health["memo@acme"]["pid"] != health["memo@beta"]["pid"]
        assert manager.connection_health(ref, organisation="beta")["organisations"] == ["beta"]
    finally:
        await manager.aclose()


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_server_declared_shared_is_one_connection_for_every_organisation(
    transport: str, legacy_http: HttpServer
) -> None:
    ref = counter(transport, legacy_http, shared=True)
    manager = McpManager()
    try:
        await manager.start([("acme", ref), ("beta", ref)])
        assert await counts(manager, ref, "acme", 2) == ["count=1", "count=2"]
        assert await counts(manager, ref, "beta", 1) == ["count=3"]
        health = manager.health()
        assert set(health) == {"memo"}
        assert health["memo"]["organisations"] == ["acme", "beta"] and health["memo"]["shared"]
    finally:
        await manager.aclose()


# -- through the gateway: sampling answered for the call that asked ----------------------------------


SECRET = "LATE SAMPLE carrying ACME-PRIVATE-CONTEXT"


def scripted(upstream: FakeOpenAI, tool_calls: list[tuple[str, JSON]], sampled: str) -> None:
    """The model calls ``tool_calls``, answers sampling requests with ``sampled``, then ends."""

    def respond(body: JSON) -> Reply:
        if "tools" not in body:
            return Reply(text=sampled, prompt_tokens=40, completion_tokens=3)
        if any(m["role"] == "tool" for m in body["messages"]):
            return Reply(text="done")
        return Reply(tool_calls=list(tool_calls))

    upstream.responder = respond


def tool_results(upstream: FakeOpenAI) -> list[str]:
    final = next(r for r in upstream.requests if "tools" in r and any(m["role"] == "tool" for m in r["messages"]))
    return [m["content"] for m in final["messages"] if m["role"] == "tool"]


@pytest.fixture
def second_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key="sk-beta-upstream").start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("placement", ["stdio per organisation", "http shared"])
def test_late_sampling_is_answered_and_billed_for_the_call_that_asked(
    placement: str, tmp_path: Path, upstream: FakeOpenAI, second_upstream: FakeOpenAI, legacy_http: HttpServer, gateways: Gateways
) -> None:
    # acme's tool works, then samples while beta's calls run on the same server (the same
    # connection when shared): the sampling must reach acme's model with acme's provider key,
    # be billed to acme, and beta's must stay beta's. beta's request runs two sampling calls
    # in parallel: both are answered.
    if placement.startswith("stdio"):
        lab = server_ref("lab", "--legacy").mcp
    else:
        lab = http_ref("lab", legacy_http, shared=True).mcp
    assert lab is not None
    plugin = {"id": "lab", "mcp": lab.model_dump(mode="json", exclude_defaults=True)}
    settings = make_settings(
        tmp_path,
        upstream.base_url,
        providers=[
            {"id": "acme-provider", "kind": "openai", "base_url": upstream.base_url, "api_key": upstream.api_key, "max_retries": 0},
            {"id": "beta-provider", "kind": "openai", "base_url": second_upstream.base_url, "api_key": second_upstream.api_key, "max_retries": 0},
        ],
        models=[{"id": "acme-model", "provider": "acme-provider"}, {"id": "beta-model", "provider": "beta-provider"}],
        organisations=[
            {"id": "acme", "models": ["acme-model"], "plugins": [plugin]},
            {"id": "beta", "models": ["beta-model"], "plugins": [plugin]},
        ],
        orchestration={"tool_timeout_s": 30},
    )
    scripted(upstream, [("lab__ask_model_later", {"question": SECRET, "delay": 1.5})], "acme's model answered")
    scripted(
        second_upstream,
        [("lab__ask_model_later", {"question": "beta asks later", "delay": 2}), ("lab__ask_model", {"question": "beta asks"})],
        "beta's model answered",
    )
    server = gateways.start(settings)
    acme = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0, timeout=60)
    beta = openai.OpenAI(base_url=server.base_url, api_key=server.mint("beta"), max_retries=0, timeout=60)
    replies: dict[str, Any] = {}

    def ask(name: str, client: openai.OpenAI, model: str) -> None:
        replies[name] = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "go"}])

    acme_thread = threading.Thread(target=ask, args=("acme", acme, "acme-model"))
    acme_thread.start()
    deadline = time.monotonic() + 20
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    ask("beta", beta, "beta-model")  # runs while acme's tool is still working
    acme_thread.join(60)
    assert replies["acme"].choices[0].message.content == "done"
    assert replies["beta"].choices[0].message.content == "done"

    assert tool_results(upstream) == ["the model said: acme's model answered (endTurn, model acme-model)"]
    assert tool_results(second_upstream) == ["the model said: beta's model answered (endTurn, model beta-model)"] * 2
    acme_samplings = [r for r in upstream.requests if "tools" not in r]
    assert [r["messages"][-1]["content"] for r in acme_samplings] == [SECRET]
    assert not any("ACME-PRIVATE" in str(r) for r in second_upstream.requests)
    beta_samplings = [r["messages"][-1]["content"] for r in second_upstream.requests if "tools" not in r]
    assert sorted(beta_samplings) == ["beta asks", "beta asks later"]

    server.flush_usage()
    with Session(server.gateway.engine) as session:
        rows = list(session.exec(select(UsageRecord).where(UsageRecord.source == "mcp-sampling")))
    assert sorted((r.organisation_id, r.model, r.prompt_tokens) for r in rows) == [
        ("acme", "acme-model", 40),
        ("beta", "beta-model", 40),
        ("beta", "beta-model", 40),
    ]
