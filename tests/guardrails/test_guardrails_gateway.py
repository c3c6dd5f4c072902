"""Guardrails through the real gateway: input, output (streamed and not) and tool results, on the
OpenAI-compatible routes (400 guardrail_block), Responses, Messages and endpoints (422)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from sqlalchemy import select
from sqlmodel import SQLModel

from runtime.config import Settings, settings_from_dict
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.services import fresh_database
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer, wait_until
from tests.whatsapp.conftest import (  # noqa: F401 (fixtures)
    SUPPORT_NUMBER,
    Served,
    answer_through_endpoint,
    graph,
    graph_api,
    serve,
    settings_dict,
)
from workers.whatsapp.payloads import change, delivery, text_message
from workers.whatsapp.worker import WhatsAppWorker

CARD = "4111 1111 1111 1111"
EMAIL = "ana.silva@example.com"
PII = {"key": "pii", "kind": "pii", "action": "redact"}
WORDS = {"key": "words", "kind": "denylist", "terms": ["project falcon"], "action": "block", "apply_to": ["input", "output"]}
ORGS: list[dict[str, Any]] = [
    {"id": "redactor", "plugins": [{"id": "testkit"}], "guardrails": [PII], "guardrails_default": ["pii"]},
    {"id": "blocker", "guardrails": [WORDS], "guardrails_default": ["words"]},
    {"id": "toolblock", "plugins": [{"id": "testkit"}], "guardrails": [{**PII, "action": "block", "apply_to": ["tool_results"]}], "guardrails_default": ["pii"]},
    {"id": "toollog", "plugins": [{"id": "testkit"}], "guardrails": [{**PII, "action": "log", "apply_to": ["tool_results"]}], "guardrails_default": ["pii"]},
    {"id": "watcher", "guardrails": [{**PII, "action": "log"}], "guardrails_default": ["pii"]},
    {
        "id": "desk",
        "guardrails": [PII, WORDS],
        "endpoints": [{"slug": "help", "model": "gpt-test", "plugins": [], "guardrails": ["words", "pii"]}],
    },
]


@pytest.fixture
def server(gateways: Gateways) -> GatewayServer:
    return gateways.start(extra_orgs=ORGS)


def sdk(server: GatewayServer, org: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint(org), max_retries=0, timeout=20)


def organisation_hits(server: GatewayServer, org: str, expected: int) -> set[tuple[str, str, str]]:
    """(stage, category, action) of the organisation's recorded hits, once ``expected`` rows are in."""
    table = SQLModel.metadata.tables["guardrail_events"]

    def enough() -> list[Any] | None:
        with server.gateway.engine.connect() as connection:
            rows = list(connection.execute(select(table).where(table.c.organisation_id == org)).mappings())
        return rows if len(rows) >= expected else None

    recorded = wait_until(enough, f"{expected} hits of {org}", within_s=10)  # recorded off the event loop, just after the answer
    assert all(EMAIL not in str(dict(row)) for row in recorded)
    return {(row["stage"], row["category"], row["action"]) for row in recorded}


def hits(server: GatewayServer, *, at_least: int = 1, stage: str | None = None) -> list[dict[str, Any]]:
    """Every recorded hit, once ``at_least`` of them (of ``stage``, if given) are in.

    Hits are recorded off the event loop, just after the answer: wait for the last one expected.
    """
    table = SQLModel.metadata.tables["guardrail_events"]

    def recorded() -> list[dict[str, Any]] | None:
        with server.gateway.engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(select(table)).mappings()]
        return rows if len([row for row in rows if stage is None or row["stage"] == stage]) >= at_least else None

    return wait_until(recorded, f"{at_least} guardrail hits", within_s=10)


# -- input ------------------------------------------------------------------------------------------


def test_input_is_redacted_before_the_model_sees_it(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Noted."))
    sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": f"Mail {EMAIL} about card {CARD}"}], tools=[{"type": "function", "function": {"name": "x"}}])
    assert upstream.requests[0]["messages"][0]["content"] == "Mail [EMAIL] about card [CREDIT_CARD]"
    recorded = hits(server, at_least=2)
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
    assert {(h["stage"], h["action"]) for h in hits(server, stage="output")} == {("input", "log"), ("output", "log")}


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
    assert ("tool_results", "email") in {(h["stage"], h["category"]) for h in hits(server, stage="tool_results")}


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
    recorded = hits(server, stage="output")
    assert {h["endpoint"] for h in recorded} == {"help"} and {h["stage"] for h in recorded} == {"input", "output"}


# -- tool results --------------------------------------------------------------------------------------------


def test_a_blocked_tool_result_is_withheld_and_the_request_goes_on(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": f"contact {EMAIL}"})]), Reply(text="I could not read it."))
    reply = sdk(server, "toolblock").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    assert reply.choices[0].message.content == "I could not read it."
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and EMAIL not in tool_message["content"]
    withheld = orjson.loads(tool_message["content"])["error"]
    assert withheld["type"] == "guardrail_block" and "'pii'" in withheld["message"]
    assert organisation_hits(server, "toolblock", 1) == {("tool_results", "email", "block")}


def test_a_logged_tool_result_reaches_the_model_unchanged(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": f"contact {EMAIL}"})]), Reply(text="done"))
    sdk(server, "toollog").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    assert upstream.requests[1]["messages"][-1]["content"] == f"contact {EMAIL}"
    assert organisation_hits(server, "toollog", 1) == {("tool_results", "email", "log")}


# -- output ------------------------------------------------------------------------------------------------------


def test_a_logged_stream_is_sent_as_written_and_recorded(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=f"Write to {EMAIL} today."))
    chunks = list(sdk(server, "watcher").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "whom?"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Write to {EMAIL} today."
    assert organisation_hits(server, "watcher", 1) == {("output", "email", "log")}


@pytest.mark.parametrize(
    ("pii", "placeholder"),
    [("+44 20 7946 0958", "[PHONE]"), ("DE89 3704 0044 0532 0130 00", "[IBAN]"), ("sk-proj-abc123DEF456ghi789JKL012mno", "[SECRET]")],
    ids=["phone", "iban", "secret"],
)
def test_phone_iban_and_secret_are_redacted_both_ways(server: GatewayServer, upstream: FakeOpenAI, pii: str, placeholder: str) -> None:
    upstream.enqueue(Reply(text=f"Noted {pii} here."))
    reply = sdk(server, "redactor").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": f"Mine is {pii} ok"}])
    assert upstream.requests[0]["messages"][0]["content"] == f"Mine is {placeholder} ok"
    assert reply.choices[0].message.content == f"Noted {placeholder} here."


# -- the other front doors -----------------------------------------------------------------------------------------


def test_responses_redacts_input_and_output(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=f"We will write to {EMAIL}."))
    response = sdk(server, "redactor").responses.create(model="gpt-test", input=f"I am {EMAIL}")
    sent = orjson.dumps(upstream.requests[0]["messages"]).decode()
    assert EMAIL not in sent and "I am [EMAIL]" in sent
    assert response.output_text == "We will write to [EMAIL]."


def test_messages_redacts_input_and_output(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=f"We will write to {EMAIL}."))
    client = anthropic.Anthropic(base_url=server.url, api_key=server.mint("redactor"), max_retries=0, timeout=20)
    message = client.messages.create(model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": f"I am {EMAIL}"}])
    sent = orjson.dumps(upstream.requests[0]["messages"]).decode()
    assert EMAIL not in sent and "I am [EMAIL]" in sent
    assert [block.text for block in message.content if block.type == "text"] == ["We will write to [EMAIL]."]


# -- WhatsApp through an endpoint --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("sqlite", tmp_path, prefix="wa_guard")


async def test_a_whatsapp_reply_is_redacted_before_it_is_sent(
    sqlite_url: str, graph: FakeGraphAPI, upstream: FakeOpenAI, serve: Callable[[Settings], Awaitable[Served]]  # noqa: F811
) -> None:
    raw: dict[str, Any] = settings_dict(sqlite_url, graph.base_url, upstream.base_url)
    raw["providers"][0]["api_key"] = UPSTREAM_KEY
    raw["organisations"][0]["guardrails"] = [{"key": "pii", "kind": "pii", "action": "redact", "apply_to": ["output"]}]
    raw["organisations"][0]["endpoints"] = [{"slug": "support", "model": "gpt-test", "plugins": [], "guardrails": ["pii"]}]
    answer_through_endpoint(raw, "support")
    served = await serve(settings_from_dict(raw))
    worker = WhatsAppWorker(served.gateway, retry_backoff_s=0.01, graph_timeout_s=2.0)
    try:
        upstream.enqueue(Reply(text=f"Sure, write to {EMAIL} or call +44 20 7946 0958."))
        await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[text_message("447700900777", "how do I reach you?")])))
        assert await worker.run_until_idle() == 1
    finally:
        await worker.stop()
    assert [s["text"]["body"] for s in graph.sent_to("447700900777")] == ["Sure, write to [EMAIL] or call [PHONE]."]
    assert EMAIL not in str(graph.sends)
