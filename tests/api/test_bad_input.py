"""Issue 9, items 10, 11 and 15: bad input is a 4xx in the envelope, readiness leaks nothing,
and an abandoned stream counts every tool call that ran."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from runtime.text import mask_credentials
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, wait_until

USER = [{"role": "user", "content": "hi"}]


def _nested_json(depth: int) -> str:
    """JSON nested ``depth`` objects deep (written by hand: encoders refuse such depths)."""
    return '{"deeper":' * depth + '{"leaf":1}' + "}" * depth


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-test", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-test", "messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-test", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
        ({"model": "gpt-test", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 7}]}]}, "messages[0].content[0].image_url"),
        ({"model": "gpt-test", "messages": USER, "max_tokens": 18446744073709551615}, "max_tokens"),
        ({"model": "gpt-test", "messages": USER, "max_completion_tokens": 2**31}, "max_completion_tokens"),
        ({"model": "gpt-test", "messages": USER, "temperature": 9}, "temperature"),
        ({"model": "gpt-test", "messages": USER, "seed": 2**70}, "seed"),
        ({"model": "gpt-test", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "gpt-test", "messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "gpt-test", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
        ({"model": "gpt-test", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]}]}, "messages[0].tool_calls[0]"),
        ({"model": "gpt-test", "messages": USER, "stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(gateway: GatewayServer, upstream: FakeOpenAI, body: dict, param: str) -> None:
    key = gateway.mint("bare")
    with httpx.Client(timeout=10) as client:
        response = client.post(f"{gateway.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        # The connection is still good for the next request (it used to be reset after a 500).
        upstream.enqueue(Reply(text="still here"))
        after = client.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, headers={"Authorization": f"Bearer {key}"})
        assert after.status_code == 200
    assert len(upstream.requests) == 1


def test_a_deeply_nested_unknown_field_is_a_400(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    body = '{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "metadata_blob": ' + _nested_json(1000) + "}"
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=body, headers={"Authorization": f"Bearer {gateway.mint('bare')}", "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request_error"
    assert upstream.requests == []


# -- 10: public readiness leaks nothing ------------------------------------------------------------------------


def test_readiness_names_no_internals(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    leaky = [sys.executable, "-c", "import sys; sys.stderr.write('connecting to postgresql://app:hunter2@db.internal:5432/crm\\n'); sys.exit(3)"]
    server = gateways.start(plugins=[{"id": "broken", "mcp": {"command": leaky}}])
    wait_until(lambda: server.gateway.mcp.health().get("broken", {}).get("state") not in (None, "connecting"), "the broken server's first attempt", within_s=30)
    assert server.gateway.mcp.health()["broken"]["healthy"] is False
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    body = response.text
    checks = response.json()["checks"]
    assert "broken" not in body  # no plugin is named
    for secret in ("hunter2", "db.internal", "sys.exit", str(tmp_path), "plugway.db", "exited"):
        assert secret not in body
    assert set(checks["database"]) == {"ok"}


def test_url_credentials_are_masked() -> None:
    assert mask_credentials("could not connect to postgresql+psycopg://app:s3cr%21t@db:5432/x (timeout)") == (
        "could not connect to postgresql+psycopg://app:****@db:5432/x (timeout)"
    )
    assert mask_credentials("redis://:pw@127.0.0.1:6379/0") == "redis://:****@127.0.0.1:6379/0"
    assert mask_credentials("no credentials in http://host/path") == "no credentials in http://host/path"


# -- 15: an abandoned stream counts every tool call that ran ------------------------------------------------------


def test_abandoned_stream_during_tools_counts_both_calls(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("testkit__slow", {"seconds": 3}), ("testkit__slow", {"seconds": 3.1})], prompt_tokens=40, completion_tokens=8),
        Reply(text="never sent"),
    )
    key = gateway.mint()
    seen = 0
    started = time.monotonic()
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER, "stream": True}, headers={"Authorization": f"Bearer {key}"}, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith(": plugway tool_call"):
                seen += 1
                if seen == 2:
                    break
    assert seen == 2
    deadline = time.monotonic() + 10
    records: list[UsageRecord] = []
    while time.monotonic() < deadline and not records:
        gateway.flush_usage()
        with Session(gateway.gateway.engine) as session:
            records = list(session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme")))
        time.sleep(0.05)
    (record,) = records
    assert (record.tool_calls, record.status, record.prompt_tokens) == (2, "abandoned", 40)
    # The tools were cancelled when the client left, not run to their end.
    assert time.monotonic() - started < 2.5
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("start", ["9999-12-31", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "1900-01-01"])
def test_usage_periods_outside_the_calendar_are_400(gateway: GatewayServer, start: str) -> None:
    response = httpx.get(f"{gateway.base_url}/usage", params={"start": start}, headers={"Authorization": f"Bearer {gateway.mint()}"}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "start"
