"""A tool call is recorded the same way whichever door it came through: inside the loop, through
``/mcp``, or from the console's management API: a usage row with its cost and tool-call count, and
the request's telemetry (its metrics labelled with the organisation that paid)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import httpx2
import openai
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from sqlmodel import Session, select

from runtime.storage.keys import mint_admin_key
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.operations.conftest import matching, scrape
from tests.support import Gateways, GatewayServer

SIX_TIMES_SEVEN = {"expression": "6*7"}


async def call_over_mcp(server: GatewayServer, key: str) -> None:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:  # type: ignore[arg-type]
            result = await client.call_tool("calculator__evaluate", SIX_TIMES_SEVEN)
            assert not result.is_error


def test_a_tool_call_is_recorded_alike_through_the_loop_mcp_and_the_console(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    server = gateways.start()
    key = server.mint("acme")
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", SIX_TIMES_SEVEN)], prompt_tokens=30, completion_tokens=5), Reply(text="42"))
    openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "6*7?"}]
    )
    asyncio.run(call_over_mcp(server, key))
    admin_key, _ = mint_admin_key(server.gateway.engine, name="ops")
    console = httpx.post(
        f"{server.url}/admin/v1/plugins/acme/calculator/tools/evaluate/call",
        json={"arguments": SIX_TIMES_SEVEN},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=20,
    )
    assert console.status_code == 200 and console.json()["ok"] is True
    server.flush_usage()
    with Session(server.gateway.engine) as session:
        rows = {row.source: row for row in session.exec(select(UsageRecord).order_by(UsageRecord.id))}
    loop, mcp, admin = rows["api"], rows["mcp"], rows["admin"]
    for row in (loop, mcp, admin):
        assert row.organisation_id == "acme" and row.status == "ok" and row.tool_calls >= 1
        assert row.cost_usd is not None and row.latency_ms > 0
    assert loop.cost_usd > 0 and mcp.cost_usd == 0 == admin.cost_usd  # a tool costs no tokens
    assert (mcp.key_id, mcp.model, mcp.tool_calls) == (loop.key_id, "calculator__evaluate", 1)
    assert (admin.key_id, admin.model, admin.tool_calls) == (None, "calculator__evaluate", 1)
    # Telemetry: each door's request is counted for the organisation that paid, labelled with what it ran.
    requests = matching(scrape(server.url), "plugway_requests_total", organisation="acme", status="200")
    by_model: dict[str, float] = {}
    for labels, count in requests.items():
        by_model[dict(labels)["model"]] = by_model.get(dict(labels)["model"], 0) + count
    # (The MCP client's own handshake and listing are requests too, with no model.)
    assert (by_model.get("gpt-test"), by_model.get("calculator__evaluate")) == (1, 2)
