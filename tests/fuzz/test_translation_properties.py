"""Property-based checks (issue 9) of the pure translation code: the SSE parser and the
OpenAI <-> Anthropic translation. Bounded to run in a few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import GatewayError, UpstreamError
from runtime.providers.anthropic_translate import (
    StreamTranslator,
    from_anthropic_response,
    system_fold,
    to_anthropic_request,
)
from runtime.providers.streaming import StreamAccumulator, iter_sse_data

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Text without line breaks or NUL: what one SSE data line can carry.
line_text = st.text(alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=40)


async def _lines(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


def _parse(lines: list[str]) -> list[str]:
    async def collect() -> list[str]:
        return [data async for data in iter_sse_data(_lines(lines))]

    return asyncio.run(collect())


# -- SSE ----------------------------------------------------------------------------------------------


@FAST
@given(st.lists(st.lists(line_text, min_size=1, max_size=3), max_size=8), st.lists(line_text, max_size=3))
def test_sse_framing_round_trips_every_payload(payloads: list[list[str]], comments: list[str]) -> None:
    """Each event's data lines come back joined with newlines, in order; comments are skipped."""
    lines: list[str] = [f":{comment}" for comment in comments]
    expected: list[str] = []
    for data_lines in payloads:
        joined = "\n".join(data_lines)
        if joined == "[DONE]":
            continue
        expected.append(joined)
        lines.extend(["event: message", *(f"data: {line}" for line in data_lines), ""])
    lines.extend(["data: [DONE]", "", "data: never seen", ""])
    assert _parse(lines) == expected


@FAST
@given(st.lists(st.text(max_size=30), max_size=20))
def test_sse_parser_never_raises_on_noise(lines: list[str]) -> None:
    _parse(lines)


# -- OpenAI -> Anthropic requests -------------------------------------------------------------------------


@FAST
@given(st.dictionaries(st.sampled_from(["model", "messages", "tools", "tool_choice", "stop", "max_tokens", "temperature", "n", "response_format"]), json_values, max_size=6))
def test_arbitrary_bodies_translate_or_fail_as_request_errors(body: dict[str, Any]) -> None:
    try:
        to_anthropic_request(body)
    except GatewayError as exc:
        assert exc.status == 400


text_part = st.text(min_size=1, max_size=30).filter(lambda t: t.strip() != "")
roles = st.sampled_from(["system", "user", "assistant"])


@FAST
@given(st.lists(st.tuples(roles, text_part), min_size=1, max_size=8).filter(lambda ms: any(r != "system" for r, _ in ms)))
def test_conversations_alternate_and_keep_every_word(messages: list[tuple[str, str]]) -> None:
    body = {"model": "claude-x", "messages": [{"role": role, "content": text} for role, text in messages]}
    request = to_anthropic_request(body)
    turns = request["messages"]
    assert all(a["role"] != b["role"] for a, b in zip(turns, turns[1:], strict=False))
    # System messages before the first turn make the top-level system; later ones are folded in place.
    leading = next(i for i, (role, _) in enumerate(messages) if role != "system")
    sent = [block["text"] for turn in turns for block in turn["content"]]
    assert sent == [system_fold(text) if role == "system" else text for role, text in messages[leading:]]
    assert request.get("system", "") == "\n\n".join(text for _, text in messages[:leading])


# -- Anthropic -> OpenAI responses and streams ----------------------------------------------------------------


blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=20)),
    st.builds(
        lambda i, n, args: {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": args},
        st.integers(0, 999),
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    ),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, st.text(max_size=10)),
)


@FAST
@given(st.lists(blocks, max_size=5), st.sampled_from(["end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", None]))
def test_responses_keep_text_and_tool_inputs(content: list[dict[str, Any]], stop_reason: str | None) -> None:
    message = {"id": "msg_1", "model": "claude-x", "content": content, "stop_reason": stop_reason, "usage": {"input_tokens": 3, "output_tokens": 4}}
    response = from_anthropic_response(message, created=0)
    choice = response["choices"][0]
    texts = "".join(b["text"] for b in content if b["type"] == "text")
    calls = [b for b in content if b["type"] == "tool_use"]
    assert (choice["message"]["content"] or "") == texts
    assert [orjson.loads(c["function"]["arguments"]) for c in choice["message"].get("tool_calls") or []] == [b["input"] for b in calls]
    assert response["usage"]["total_tokens"] == 7


events = st.fixed_dictionaries(
    {"type": st.sampled_from(["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop", "ping", "error", "unknown"])},
    optional={"index": st.integers(0, 3), "delta": st.dictionaries(st.sampled_from(["type", "text", "partial_json", "stop_reason"]), st.text(max_size=8), max_size=3), "content_block": st.dictionaries(st.sampled_from(["type", "text", "id", "name"]), st.text(max_size=8), max_size=3), "message": st.just({"id": "m", "usage": {"input_tokens": 1}}), "usage": st.just({"output_tokens": 2})},
)


@FAST
@given(st.lists(events, max_size=12))
def test_stream_translation_never_fails_but_on_upstream_errors(sequence: list[dict[str, Any]]) -> None:
    translator = StreamTranslator(model="claude-x", created=0, include_usage=True)
    accumulator = StreamAccumulator()
    try:
        for event in sequence:
            for chunk in translator.feed(event):
                accumulator.add(chunk)
    except UpstreamError:
        return
    accumulator.message()


@FAST
@given(st.lists(st.text(min_size=1, max_size=10), max_size=10))
def test_streamed_text_arrives_whole(pieces: list[str]) -> None:
    translator = StreamTranslator(model="claude-x", created=0, include_usage=True)
    accumulator = StreamAccumulator()
    sequence = [
        {"type": "message_start", "message": {"id": "m", "model": "claude-x", "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    for event in sequence:
        for chunk in translator.feed(event):
            accumulator.add(chunk)
    assert accumulator.text == "".join(pieces)
    assert accumulator.finish_reason == "stop" and accumulator.usage is not None
    assert accumulator.usage["total_tokens"] == 14
