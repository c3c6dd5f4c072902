"""Guardrails through the real gateway: input, output (streamed and not) and tool results, on the
OpenAI-compatible routes (400 guardrail_block), Responses, Messages and endpoints (422)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import select
from sqlmodel import SQLModel

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer, make_settings

CARD = "4111 1111 1111 1111"
EMAIL = "ana.silva@example.com"
PII = {"key": "pii", "kind": "pii", "action": "redact"}
WORDS = {"key": "words", "kind": "denylist", "terms": ["project falcon"], "action": "block", "apply_to": ["input", "output"]}
ORGS: list[dict[str, Any]] = [
    {"id": "redactor", "plugins": [{"id": "testkit"}], "guardrails": [PII], "guardrails_default": ["pii"]},
    {"id": "blocker", "guardrails": [WORDS], "guardrails_default": ["words"]},
    {"id": "watcher", "guardrails": [{**PII, "action": "log"}], "guardrails_default": ["pii"]},
    {
        "id": "desk",
        "guardrails": [PII, WORDS],
        "endpoints": [{"slug": "help", "model": "gpt-test", "plugins": [], "guardrails": ["words", "pii"]}],
    },
]


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[GatewayServer]:
    gateway = GatewayServer(make_settings(tmp_path, upstream.base_url, extra_orgs=ORGS)).start()
    yield gateway
    gateway.stop()


def sdk(server: GatewayServer, org: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint(org), max_retries=0)


def hits(server: GatewayServer) -> list[dict[str, Any]]:
    table = SQLModel.metadata.tables["guardrail_events"]
    import time

    time.sleep(0.3)  # recorded off the event loop, just after the answer
    with server.gateway.engine.connect() as connection:
        return [dict(row) for row in connection.execute(select(table)).mappings()]


# -- input ------------------------------------------------------------------------------------------


def test_input_is_redacted_before_the_model_sees_it(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Noted."))
    sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": f"Mail {EMAIL} about card {CARD}"}], tools=[{"type": "function", "function": {"name": "x"}}])
    assert upstream.requests[0]["messages"][0]["content"] == "Mail [EMAIL] about card [CREDIT_CARD]"
    recorded = hits(server)
    assert {(h["stage"], h["category"], h["action"]) for h in recorded} == {("input", "email", "redact"), ("input", "credit_card", "redact")}
    assert all(EMAIL not in str(h) and "4111" not in str(h) for h in recorded)


def test_a_blocked_input_is_400_and_costs_nothing(server: GatewayServer, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server, "blocker").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Status of Project  Falcon?"}])
    error = info.value.body
    assert (error["type"], error["code"], error["guardrail_key"], error["action"]) == ("guardrail_block", "guardrail_block", "words", "block")  # type: ignore[index]
    assert error["message"] == "Content blocked by guardrail"  # type: ignore[index]
    assert error["findings"] == [{"category": "denylist", "message": error["findings"][0]["message"]}]  # type: ignore[index]
    assert "falcon" not in str(error).lower()
    assert upstream.requests == []


def test_logging_changes_nothing_but_records(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=f"Write to {EMAIL}."))
    reply = sdk(server, "watcher").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": f"Who is {EMAIL}?"}])
    assert upstream.requests[0]["messages"][0]["content"] == f"Who is {EMAIL}?"
    assert reply.choices[0].message.content == f"Write to {EMAIL}."
    assert {(h["stage"], h["action"]) for h in hits(server)} == {("input", "log"), ("output", "log")}


# -- output -----------------------------------------------------------------------------------------


def test_output_is_redacted(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=f"Your card {CARD} is on file."))
    reply = sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "card?"}], tools=[{"type": "function", "function": {"name": "x"}}])
    assert reply.choices[0].message.content == "Your card [CREDIT_CARD] is on file."


def test_streamed_output_never_leaks_a_split_match(server: GatewayServer, upstream: FakeOpenAI) -> None:
    # The fake streams word by word, so the card number arrives in four chunks.
    upstream.enqueue(Reply(text=f"Card {CARD} and mail {EMAIL} done."))
    chunks = list(sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True, tools=[{"type": "function", "function": {"name": "x"}}]))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == "Card [CREDIT_CARD] and mail [EMAIL] done."
    assert not any(digits in piece for piece in pieces for digits in ("4111", "1111"))


def test_a_blocked_output_ends_the_stream_with_an_error(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Sure, project falcon ships next week."))
    with pytest.raises(openai.APIError) as info:
        for _chunk in sdk(server, "blocker").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "news?"}], stream=True):
            pass
    assert "guardrail" in str(info.value.message).lower()
    upstream.enqueue(Reply(text="project falcon"))
    with pytest.raises(openai.BadRequestError):
        sdk(server, "blocker").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "news?"}])


# -- tool results -------------------------------------------------------------------------------------


def test_tool_results_are_redacted_before_the_model_reads_them(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": f"contact {EMAIL}"})]), Reply(text="done"))
    sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "contact [EMAIL]"
    assert ("tool_results", "email") in {(h["stage"], h["category"]) for h in hits(server)}


# -- the other front doors -----------------------------------------------------------------------------


def test_responses_and_messages_refuse_in_their_own_envelopes(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("blocker")
    with pytest.raises(openai.BadRequestError) as responses:
        openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0).responses.create(model="gpt-test", input="about project falcon")
    assert responses.value.body["type"] == "guardrail_block"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as messages:
        anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0).messages.create(model="gpt-test", max_tokens=10, messages=[{"role": "user", "content": "project falcon?"}])
    assert messages.value.body["error"]["message"] == "Content blocked by guardrail"  # type: ignore[index]
    assert upstream.requests == []


def test_endpoints_answer_422_naming_the_guardrail_and_redact_otherwise(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("desk")
    blocked = httpx.post(f"{server.url}/api/desk/help", json={"message": "project falcon?"}, headers={"Authorization": f"Bearer {key}"})
    assert blocked.status_code == 422 and blocked.json()["code"] == "guardrail_block" and "'words'" in blocked.json()["error"]
    assert upstream.requests == []
    upstream.enqueue(Reply(text=f"We will mail {EMAIL}."))
    answer = httpx.post(f"{server.url}/api/desk/help", json={"message": f"I am {EMAIL}"}, headers={"Authorization": f"Bearer {key}"}).json()
    assert upstream.requests[0]["messages"][-1]["content"] == "I am [EMAIL]"
    assert answer["content"] == "We will mail [EMAIL]."
    recorded = hits(server)
    assert {h["endpoint"] for h in recorded} == {"help"} and {h["stage"] for h in recorded} == {"input", "output"}
