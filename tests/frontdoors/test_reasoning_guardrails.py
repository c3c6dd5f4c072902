"""Output guardrails read the reasoning a client is shown, and the model still gets its own back.

Organisation "guarded" redacts PII and blocks a denylisted term on output. A thinking block or
reasoning summary with an email in it reaches the client redacted, sealed (runtime.reasoning.shown);
sent back, the model gets the block it signed, unaltered: the Anthropic fake refuses a tool round
whose thinking was altered, so these pass only if the seal opens to the original.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from runtime.reasoning import CARRIER_PREFIX
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.frontdoors.conftest import CLAUDE
from tests.support import GatewayServer

JSON = dict[str, Any]
EMAIL = "jane.doe@example.com"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather in a city.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
THINKING = {"type": "enabled", "budget_tokens": 2048}
QUESTION = {"role": "user", "content": "Weather in Oslo?"}


def guarded_anthropic(server: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint("guarded"), max_retries=0, timeout=20)


def assistant_turns(body: JSON) -> list[list[JSON]]:
    return [m["content"] for m in body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_thinking_shown_on_the_native_path_is_redacted_and_reaches_the_model_whole(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    fake_anthropic.script([ClaudeReply(thinking=f"Mail {EMAIL} the forecast later.", tool_use=[("get_weather", {"city": "Oslo"})]), ClaudeReply(thinking="Done.", text="Cold.")])
    sdk = guarded_anthropic(claude_gateway)
    request: JSON = {"model": CLAUDE, "max_tokens": 4000, "thinking": THINKING, "tools": [WEATHER_TOOL]}
    if stream:
        with sdk.messages.stream(messages=[QUESTION], **request) as events:
            first = events.get_final_message()
    else:
        first = sdk.messages.create(messages=[QUESTION], **request)
    assert fake_anthropic.requests[0].body["thinking"] == THINKING  # the native path
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Mail [EMAIL] the forecast later."
    assert EMAIL not in first.model_dump_json() and thinking.signature.startswith(CARRIER_PREFIX)

    second = sdk.messages.create(
        messages=[QUESTION, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},  # type: ignore[list-item]
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "-3 C"}]}],  # type: ignore[union-attr]
        **request,
    )
    assert second.content[-1].text == "Cold."  # type: ignore[union-attr]
    sent = assistant_turns(fake_anthropic.requests[1].body)[0][0]
    assert sent["thinking"] == f"Mail {EMAIL} the forecast later." and fake_anthropic.signatures[sent["signature"]] == sent["thinking"]


def test_thinking_without_findings_is_shown_as_the_model_signed_it(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(thinking="Nothing private here.", text="Hi.")])
    message = guarded_anthropic(claude_gateway).messages.create(model=CLAUDE, max_tokens=4000, thinking=THINKING, messages=[{"role": "user", "content": "Hi"}])  # type: ignore[arg-type]
    assert message.content[0].signature in fake_anthropic.signatures  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_a_denylisted_term_in_thinking_blocks_the_answer(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    fake_anthropic.script([ClaudeReply(thinking="This is about project falcon.", text="I cannot say.")])
    sdk = guarded_anthropic(claude_gateway)
    request: JSON = {"model": CLAUDE, "max_tokens": 4000, "thinking": THINKING, "messages": [{"role": "user", "content": "Status?"}]}
    if stream:
        with sdk.messages.stream(**request) as events:
            seen = []
            with pytest.raises(anthropic.APIStatusError):
                for event in events:
                    seen.append(event)
        assert not any(getattr(getattr(event, "delta", None), "thinking", None) for event in seen)  # none of it went out
    else:
        with pytest.raises(anthropic.BadRequestError) as refused:
            sdk.messages.create(**request)
        assert refused.value.body["error"]["message"] == "Content blocked by guardrail"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_reasoning_summaries_through_the_loop_are_redacted_and_the_model_gets_its_thinking_back(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    """A Responses client on an Anthropic model: the thinking is its reasoning summary."""
    fake_anthropic.script([ClaudeReply(thinking=f"Ask, then mail {EMAIL}.", tool_use=[("get_weather", {"city": "Oslo"})]), ClaudeReply(thinking="Done.", text="Cold.")])
    sdk = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint("guarded"), max_retries=0, timeout=20)
    request: JSON = {"model": CLAUDE, "tools": [WEATHER], "store": False, "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low"}}
    if stream:
        with sdk.responses.stream(input="Weather in Oslo?", **request) as events:
            first = events.get_final_response()
    else:
        first = sdk.responses.create(input="Weather in Oslo?", **request)
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.summary[0].text == "Ask, then mail [EMAIL]."
    output = [item.model_dump(exclude_none=True) for item in first.output]
    assert EMAIL not in str([item.get("summary") for item in output])
    call = next(item for item in first.output if item.type == "function_call")
    second = sdk.responses.create(input=[{"role": "user", "content": "Weather in Oslo?"}, *output, {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}], **request)  # type: ignore[list-item]
    assert second.output_text == "Cold."
    sent = assistant_turns(fake_anthropic.requests[1].body)[0][0]
    assert fake_anthropic.signatures[sent["signature"]] == f"Ask, then mail {EMAIL}."
