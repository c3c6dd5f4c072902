"""Bad input the hostile probe sent, refused in the right envelope and naming the field: strict
integers on the management API, Responses' require_approval, a huge session_id not echoed,
/mcp's oversized bodies and malformed ids as JSON-RPC errors, rate-limit headers that never
pass their limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runtime.limits.decision import build_decision
from runtime.storage.keys import mint_admin_key
from tests.fakes.openai_server import FakeOpenAI
from tests.support import Gateways, GatewayServer

ORGS: list[dict[str, Any]] = [
    {"id": "desk", "endpoints": [{"slug": "notes", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True}}]},
]
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def server(gateways: Gateways) -> GatewayServer:
    return gateways.start(extra_orgs=ORGS, max_body_bytes=64 * 1024)


@pytest.fixture
def admin(server: GatewayServer) -> Iterator[httpx.Client]:
    key, _ = mint_admin_key(server.gateway.engine, name="ops")
    with httpx.Client(base_url=f"{server.url}/admin/v1", headers={"Authorization": f"Bearer {key}"}, timeout=20) as client:
        yield client


@pytest.mark.parametrize(("field", "value"), [("rpm", True), ("rpm", "5"), ("daily_tokens", "100"), ("rpm", 5.5)])
def test_admin_limits_are_strict_integers(admin: httpx.Client, field: str, value: Any) -> None:
    created = admin.post("/keys", json={"organisation": "acme", field: value})
    assert created.status_code == 400, created.text
    assert created.json()["error"]["param"] == field
    key_id = admin.post("/keys", json={"organisation": "acme"}).json()["id"]
    updated = admin.patch(f"/keys/{key_id}", json={field: value})
    assert updated.status_code == 400 and updated.json()["error"]["param"] == field
    assert admin.get(f"/keys/{key_id}").json()[field] is None


@pytest.mark.parametrize("approval", [{"always": 5}, {"never": "clock"}, {"sometimes": {}}])
def test_responses_refuse_a_malformed_require_approval(server: GatewayServer, upstream: FakeOpenAI, approval: Any) -> None:
    body = {"model": "gpt-test", "input": "hi", "tools": [{"type": "mcp", "server_label": "clock", "require_approval": approval}]}
    answer = httpx.post(f"{server.base_url}/responses", json=body, headers={"Authorization": f"Bearer {server.mint()}"}, timeout=20)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "tools[0].require_approval"
    assert upstream.requests == []


def test_a_huge_session_id_is_not_echoed_back(server: GatewayServer) -> None:
    session_id = "s" * 5000
    answer = httpx.post(
        f"{server.url}/api/desk/notes",
        json={"message": "hi", "session_id": session_id},
        headers={"Authorization": f"Bearer {server.mint('desk')}"},
        timeout=20,
    )
    assert answer.status_code == 404 and "session_not_found" in answer.text
    assert len(answer.content) < 500 and "s" * 100 not in answer.text


def test_mcp_answers_an_oversized_body_with_a_jsonrpc_error(server: GatewayServer) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {server.mint()}"}
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * 70_000 + b'"}}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off as it arrives
        yield from (big[i : i + 8192] for i in range(0, len(big), 8192))

    for content in (big, chunks()):
        answer = httpx.post(f"{server.url}/mcp", content=content, headers=headers, timeout=20)
        assert answer.status_code == 413
        assert answer.headers["content-type"].startswith("application/json")
        error = answer.json()
        assert error["jsonrpc"] == "2.0" and error["id"] is None and error["error"]["code"] == -32600


@pytest.mark.parametrize("bad_id", [{"x": 1}, 1.5, True, None, [1]])
def test_mcp_answers_a_malformed_id_with_a_jsonrpc_error(server: GatewayServer, bad_id: Any) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {server.mint()}"}
    message = {"jsonrpc": "2.0", "id": bad_id, "method": "tools/list"}
    answer = httpx.post(f"{server.url}/mcp", json=message, headers=headers, timeout=20)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["jsonrpc"] == "2.0" and error["error"]["code"] == -32600 and "'id'" in error["error"]["message"]


def test_remaining_tokens_never_pass_the_limit() -> None:
    limit = 2**63 - 1
    # A counter driven negative (bad upstream usage) once made this 2^64 - 1.
    decision = build_decision(
        allowed=True, rpm=5, daily_tokens=limit, requests_in_window=-3, tokens_used=-(2**63),
        slot_free_in_s=0, window_clear_in_s=0, period_end_in_s=10,
    )
    headers = decision.headers()
    assert headers["x-ratelimit-remaining-tokens"] == str(limit)
    assert headers["x-ratelimit-remaining-requests"] == "5"
