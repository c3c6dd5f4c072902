"""Every upstream call a tool's MCP sampling makes is billed: its tokens reach a usage row
(source ``mcp-sampling``) and the key's daily counter, however many times the tool samples,
and also when the tool call is cut off while a sampling call is still on its way."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer

TEST_SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "mcp_test_server.py"
USER = [{"role": "user", "content": "go"}]
DAILY_CAP = 100_000


@pytest.fixture
def gateway(request: pytest.FixtureRequest, gateways: Gateways) -> GatewayServer:
    # --legacy: the server asks with sampling/createMessage requests of its own, any number per call.
    plugin = {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER), "--legacy"]}}
    orchestration = getattr(request, "param", {"tool_timeout_s": 5})
    return gateways.start(plugins=[plugin], orchestration=orchestration)


def _sampling_rows(gateway: GatewayServer, expected: int) -> list[UsageRecord]:
    deadline = time.monotonic() + 30
    while True:
        gateway.flush_usage()
        with Session(gateway.gateway.engine) as session:
            rows = list(session.exec(select(UsageRecord).where(UsageRecord.source == "mcp-sampling")))
        if (len(rows) >= expected and all(r.total_tokens for r in rows)) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _tokens_left(gateway: GatewayServer, key: str, expected: int) -> int:
    """The key's remaining daily tokens as a response reports them, once they reach ``expected``."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(
            f"{gateway.base_url}/chat/completions",
            json={"model": "gpt-test", "messages": USER, "tools": [{"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        left = int(response.headers["x-ratelimit-remaining-tokens"])
        if left <= expected or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_each_of_a_tools_samplings_is_billed_and_counted_against_the_key(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    key = gateway.mint("acme", daily_tokens=DAILY_CAP)
    upstream.enqueue(
        Reply(tool_calls=[("tk__ask_model_times", {"question": "Capital of Portugal?", "times": 4})], prompt_tokens=100, completion_tokens=10),
        *(Reply(text=f"Lisbon {n}", prompt_tokens=20 + n, completion_tokens=3) for n in range(4)),
        Reply(text="Lisbon, four times.", prompt_tokens=150, completion_tokens=5),
        Reply(text="(the probe)", prompt_tokens=1, completion_tokens=1),
    )
    reply = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "Lisbon, four times."
    rows = _sampling_rows(gateway, 4)
    assert sorted((r.prompt_tokens, r.completion_tokens, r.status) for r in rows) == [(20 + n, 3, "ok") for n in range(4)]
    sampled = sum(20 + n + 3 for n in range(4))
    # The probe request (2 tokens) is settled after its response: the counter shows everything before it.
    assert _tokens_left(gateway, key, DAILY_CAP - (110 + 155 + sampled)) == DAILY_CAP - (110 + 155 + sampled)


@pytest.mark.parametrize("gateway", [{"tool_timeout_s": 1, "tool_max_s": 2}], indirect=True)
def test_a_sampling_call_cut_off_by_the_tool_timeout_is_still_billed(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    key = gateway.mint("acme", daily_tokens=DAILY_CAP)
    upstream.enqueue(
        Reply(tool_calls=[("tk__ask_model_times", {"question": "Slow?", "times": 1})], prompt_tokens=100, completion_tokens=10),
        # The tool call is cut off at tool_max_s (2 s); the upstream answers this sampling call after 4 s.
        Reply(text="late", prompt_tokens=40, completion_tokens=4, delay_s=4),
        Reply(text="The tool timed out.", prompt_tokens=150, completion_tokens=5),
        Reply(text="(the probe)", prompt_tokens=1, completion_tokens=1),
    )
    reply = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert reply.status_code == 200
    assert reply.json()["plugway"]["tool_calls"][0]["ok"] is False
    (row,) = _sampling_rows(gateway, 1)
    assert (row.prompt_tokens, row.completion_tokens) == (40, 4)
    assert _tokens_left(gateway, key, DAILY_CAP - (110 + 155 + 44)) == DAILY_CAP - (110 + 155 + 44)
