"""Signed thinking, betas and MCP blocks on /v1/messages: the official anthropic SDK (sync and
streamed, beta and not) -> a real gateway -> the fake Anthropic upstream, which signs every
thinking block it sends and refuses one sent back altered or missing (as the real API does).
What reached the upstream is read from the fake's request log."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.frontdoors.conftest import CLAUDE
from tests.support import GatewayServer

JSON = dict[str, Any]
THINKING = {"type": "enabled", "budget_tokens": 2048}
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def client(server: GatewayServer, org: str = "acme", **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(org), max_retries=0, timeout=20, **options)


def assistant_turns(body: JSON) -> list[list[JSON]]:
    return [m["content"] for m in body["messages"] if m["role"] == "assistant"]


def thinking_of(turn: list[JSON]) -> list[JSON]:
    return [b for b in turn if b["type"] in ("thinking", "redacted_thinking")]


@pytest.mark.parametrize("stream", [False, True])
def test_signed_thinking_reaches_every_round_of_the_server_side_loop_unchanged(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    fake_anthropic.script(
        [
            ClaudeReply(thinking="Compute first.", tool_use=[("calculator__evaluate", {"expression": "6*7"})]),
            ClaudeReply(thinking="Now the time.", redacted_thinking=True, tool_use=[("clock__now", {})]),
            ClaudeReply(thinking="Both known.", text="42, at the time the clock said."),
        ]
    )
    request: JSON = {"model": CLAUDE, "max_tokens": 4000, "thinking": THINKING, "messages": [{"role": "user", "content": "6*7 and the time?"}]}
    if stream:
        with client(claude_gateway).messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = client(claude_gateway).messages.create(**request)

    first, second, third = (r.body for r in fake_anthropic.requests)
    # Every round is the client's request as it came (thinking included), with the loop's turns added.
    assert all(body["thinking"] == THINKING for body in (first, second, third))
    round1 = assistant_turns(second)
    round2 = assistant_turns(third)
    assert len(round1) == 1 and len(round2) == 2
    # The first round's thinking opens its turn in both later rounds, byte for byte.
    assert thinking_of(round1[0]) == thinking_of(round2[0])
    assert round1[0][0]["type"] == "thinking" and fake_anthropic.signatures[round1[0][0]["signature"]] == "Compute first."
    assert [b["type"] for b in round2[1]] == ["thinking", "redacted_thinking", "tool_use"]
    assert round2[1][1]["data"] in fake_anthropic.redacted
    # The client sees each round's thinking (signed), and the answer, without MCP blocks it did not ask for.
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "thinking", "redacted_thinking", "thinking", "text"]
    assert [b.signature for b in message.content if b.type == "thinking"] == [  # type: ignore[union-attr]
        *(b["signature"] for b in thinking_of(round2[0])), round2[1][0]["signature"], next(iter(reversed(fake_anthropic.signatures)))
    ]
    assert message.content[-1].text == "42, at the time the clock said."  # type: ignore[union-attr]


def test_the_non_beta_sdk_reads_plain_text_after_server_side_tools(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(tool_use=[("calculator__evaluate", {"expression": "2**5"})]), ClaudeReply(text="32.")])
    raw = client(claude_gateway).messages.with_raw_response.create(model=CLAUDE, max_tokens=200, messages=[{"role": "user", "content": "2**5?"}])
    message = raw.parse()
    assert isinstance(message.content[0].text, str) and message.content[0].text == "32."  # type: ignore[union-attr]
    assert "".join(b.text for b in message.content) == "32."  # type: ignore[union-attr]
    # The server-side call's trace is where chat completions puts it.
    trace = raw.http_response.json()["plugway"]
    assert [call["name"] for call in trace["tool_calls"]] == ["calculator__evaluate"]


def test_mcp_connector_clients_get_mcp_blocks_streamed_as_anthropic_does(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(tool_use=[("calculator__evaluate", {"expression": "3*3"})]), ClaudeReply(text="9.")])
    raw_events: list[JSON] = []
    with httpx.stream(
        "POST",
        f"{claude_gateway.url}/v1/messages?beta=true",
        headers={"authorization": f"Bearer {claude_gateway.mint()}", "anthropic-version": "2023-06-01", "anthropic-beta": "mcp-client-2025-11-20"},
        json={"model": CLAUDE, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "3*3?"}],
              "mcp_servers": [{"type": "url", "name": "calculator", "url": "plugway://plugins/calculator"}]},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        raw_events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    start = next(e for e in raw_events if e["type"] == "content_block_start" and e["content_block"]["type"] == "mcp_tool_use")
    assert start["content_block"]["input"] == {}
    deltas = [e["delta"]["partial_json"] for e in raw_events if e["type"] == "content_block_delta" and e["index"] == start["index"]]
    assert json.loads("".join(deltas)) == {"expression": "3*3"}
    # The beta SDK assembles the same stream into the block with its input.
    fake_anthropic.script([ClaudeReply(tool_use=[("calculator__evaluate", {"expression": "3*3"})]), ClaudeReply(text="9.")])
    with client(claude_gateway).beta.messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "3*3?"}], betas=["mcp-client-2025-11-20"],
        mcp_servers=[{"type": "url", "name": "calculator", "url": "plugway://plugins/calculator"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert final.content[0].input == {"expression": "3*3"}  # type: ignore[union-attr]


@pytest.mark.parametrize("org", ["acme", "plain"])
def test_betas_and_client_fields_reach_the_upstream_with_and_without_server_side_tools(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, org: str) -> None:
    steps = [ClaudeReply(thinking="Use the calculator.", tool_use=[("calculator__evaluate", {"expression": "1+1"})])] if org == "acme" else []
    fake_anthropic.script([*steps, ClaudeReply(thinking="Done.", text="2.")])
    betas = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    context_management = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    message = client(claude_gateway, org).beta.messages.create(
        model=CLAUDE, max_tokens=4000, betas=betas, thinking=THINKING, context_management=context_management,  # type: ignore[arg-type]
        metadata={"user_id": "u-1"}, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "1+1?"}], extra_query={"beta": "true"},  # as the TypeScript SDK (Claude Code) calls it
    )
    assert message.content[-1].text == "2."  # type: ignore[union-attr]
    for sent in fake_anthropic.requests:
        assert sent.query == "beta=true"
        assert [b.strip() for b in sent.headers["anthropic-beta"].split(",")] == betas
        assert sent.body["context_management"] == context_management and sent.body["metadata"] == {"user_id": "u-1"}
        assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    if org == "acme":
        # Plugin tools were merged in; no MCP connector was used, so none are shown.
        assert "calculator__evaluate" in {t["name"] for t in fake_anthropic.requests[0].body["tools"]}
        assert [b.type for b in message.content] == ["thinking", "thinking", "text"]


@pytest.mark.parametrize("org", ["acme", "plain"])
def test_thinking_the_client_sends_back_reaches_the_upstream_unchanged(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, org: str) -> None:
    """Claude Code's way: its own tools, the turn's thinking sent back with the tool results."""
    fake_anthropic.script([ClaudeReply(thinking="Ask for the weather.", redacted_thinking=True, tool_use=[("get_weather", {"city": "Oslo"})]), ClaudeReply(thinking="Got it.", text="Cold.")])
    extra: JSON = {"mcp_servers": [{"type": "url", "name": "calculator", "url": "plugway://plugins/calculator"}]} if org == "acme" else {}
    sdk = client(claude_gateway, org)
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = sdk.beta.messages.create(model=CLAUDE, max_tokens=4000, thinking=THINKING, tools=[WEATHER_TOOL], messages=[question], betas=["mcp-client-2025-11-20"] if extra else [], **extra)  # type: ignore[arg-type]
    assert [b.type for b in first.content] == ["thinking", "redacted_thinking", "tool_use"]
    call = first.content[2]
    second = sdk.beta.messages.create(
        model=CLAUDE, max_tokens=4000, thinking=THINKING, tools=[WEATHER_TOOL], betas=["mcp-client-2025-11-20"] if extra else [], **extra,  # type: ignore[arg-type]
        messages=[question, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},  # type: ignore[list-item]
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3 C"}]}],  # type: ignore[union-attr]
    )
    assert second.content[-1].text == "Cold."  # type: ignore[union-attr]
    sent_back = assistant_turns(fake_anthropic.requests[-1].body)[0]
    assert [b["type"] for b in sent_back] == ["thinking", "redacted_thinking", "tool_use"]
    assert sent_back[0]["signature"] == first.content[0].signature  # type: ignore[union-attr]


def test_without_its_thinking_the_upstream_refuses_the_tool_round(fake_anthropic: FakeAnthropic) -> None:
    """The fake holds plugway to what Anthropic requires (so the tests above could fail)."""
    fake_anthropic.script([ClaudeReply(thinking="Ask.", tool_use=[("get_weather", {"city": "Oslo"})])])
    direct = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-test-key", max_retries=0)
    first = direct.messages.create(model="claude-x", max_tokens=4000, thinking=THINKING, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "Oslo?"}])  # type: ignore[arg-type]
    call = first.content[1]
    tail = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3 C"}]}]  # type: ignore[union-attr]
    for turn in ([call.model_dump()], [{**first.content[0].model_dump(), "thinking": "Altered."}, call.model_dump()]):
        with pytest.raises(anthropic.BadRequestError):
            direct.messages.create(model="claude-x", max_tokens=4000, thinking=THINKING, tools=[WEATHER_TOOL],  # type: ignore[arg-type]
                                   messages=[{"role": "user", "content": "Oslo?"}, {"role": "assistant", "content": turn}, *tail])  # type: ignore[list-item]


def test_chat_completions_to_anthropic_names_what_it_cannot_carry(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(thinking="Hmm.", text="Hello.")])
    sdk = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint("plain"), max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(model=CLAUDE, max_tokens=4000, n=2, logprobs=True, reasoning_effort="low", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-plugway-ignored-params"] == "n, logprobs"
    assert raw.parse().choices[0].message.content == "Hello."
    sent = fake_anthropic.requests[-1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    # The turn's signed thinking rides on the message (reasoning_parts) for a client to send back.
    assert raw.http_response.json()["choices"][0]["message"]["reasoning_parts"][0]["part"]["thinking"] == "Hmm."


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_reasoning_effort_thinks_through_every_server_side_round(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    fake_anthropic.script([ClaudeReply(thinking="Use the calculator.", tool_use=[("calculator__evaluate", {"expression": "5*5"})]), ClaudeReply(thinking="Known.", text="25.")])
    sdk = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint(), max_retries=0)
    request: JSON = {"model": CLAUDE, "max_tokens": 10000, "reasoning_effort": "medium", "messages": [{"role": "user", "content": "5*5?"}]}
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in sdk.chat.completions.create(**request, stream=True) if chunk.choices)
    else:
        text = sdk.chat.completions.create(**request).choices[0].message.content or ""
    assert text == "25."
    first, second = (r.body for r in fake_anthropic.requests)
    assert first["thinking"] == second["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    # plugway turned thinking on beside tools, so it asked for interleaved thinking itself.
    assert "interleaved-thinking-2025-05-14" in fake_anthropic.requests[1].headers["anthropic-beta"]
    (turn,) = assistant_turns(second)
    assert [b["type"] for b in turn] == ["thinking", "tool_use"] and fake_anthropic.signatures[turn[0]["signature"]] == "Use the calculator."


def test_a_messages_refusal_is_logged_with_the_field_it_names(claude_gateway: GatewayServer) -> None:
    from runtime.telemetry.middleware import note_error
    from runtime.telemetry.record import RequestRecord

    answer = httpx.post(
        f"{claude_gateway.url}/v1/messages", headers={"authorization": f"Bearer {claude_gateway.mint()}", "anthropic-version": "2023-06-01"},
        json={"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}, timeout=20,
    )
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("messages[1].role: ")
    record = RequestRecord(route="/v1/messages", method="POST", started=0.0)
    note_error(record, answer.content)
    assert (record.error_code, record.error_param) == ("invalid_request_error", "messages[1].role")
