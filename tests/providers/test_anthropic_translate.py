"""OpenAI <-> Anthropic translation rules, both directions, streaming included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runtime.errors import GatewayError, UpstreamError
from runtime.json_types import JSON
from runtime.providers.anthropic_translate import (
    StreamTranslator,
    default_max_tokens_for,
    from_anthropic_response,
    ignored_chat_params,
    to_anthropic_request,
    upstream_error,
)
from tests.fakes.anthropic_server import InvalidRequest, validate_messages_request


def translate(**body: Any) -> JSON:
    body.setdefault("model", "claude-sonnet-4-5")
    request = to_anthropic_request(body, default_max_tokens=777)
    # Every translated request must be one the real API accepts.
    validate_messages_request(request)
    return request


def test_system_and_developer_messages_go_to_top_level_system() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert request["system"] == "Be brief.\n\nAnswer in French."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_a_mid_conversation_system_message_is_folded_into_the_user_turn_at_its_place() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Plan mode is on."},
            {"role": "user", "content": "Go on."},
        ]
    )
    assert request["system"] == "Be brief."
    assert request["messages"][-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "<system>\nPlan mode is on.\n</system>"}, {"type": "text", "text": "Go on."}],
    }


def test_consecutive_same_role_messages_are_merged_so_roles_alternate() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        ]
    )
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert [b["text"] for b in request["messages"][0]["content"]] == ["one", "two"]
    assert [b["text"] for b in request["messages"][1]["content"]] == ["three", "four"]


def test_empty_messages_are_dropped_instead_of_sending_empty_text_blocks() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "again"},
        ]
    )
    assert [m["role"] for m in request["messages"]] == ["user"]
    assert [b["text"] for b in request["messages"][0]["content"]] == ["hello", "again"]


def test_max_tokens_prefers_max_completion_tokens_then_max_tokens_then_default() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert translate(messages=msgs, max_tokens=50, max_completion_tokens=60)["max_tokens"] == 60
    assert translate(messages=msgs, max_tokens=50)["max_tokens"] == 50
    assert translate(model="claude-3-haiku-20240307", messages=msgs)["max_tokens"] == 4096
    assert translate(model="claude-3-5-sonnet-latest", messages=msgs)["max_tokens"] == 8192
    assert translate(model="my-custom-claude", messages=msgs)["max_tokens"] == 777
    assert default_max_tokens_for("claude-opus-4-1", 1) == 16384


def test_sampling_stop_and_user_are_translated() -> None:
    request = translate(
        messages=[{"role": "user", "content": "x"}],
        temperature=0.3,
        top_p=0.9,
        stop="END",
        user="user-42",
        seed=7,
        n=1,
        logprobs=False,
        presence_penalty=0,
        response_format={"type": "text"},
        enabled_plugin_ids=["clock"],
    )
    assert request["temperature"] == 0.3
    assert request["top_p"] == 0.9
    assert request["stop_sequences"] == ["END"]
    assert request["metadata"] == {"user_id": "user-42"}
    # Dropped parameters never reach Anthropic (it would refuse unknown keys).
    assert "seed" not in request and "n" not in request and "enabled_plugin_ids" not in request
    assert translate(messages=[{"role": "user", "content": "x"}], stop=["a", "b"])[
        "stop_sequences"
    ] == ["a", "b"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("reasoning_effort", "unheard-of"),
        ("audio", {"voice": "alloy"}),
        ("modalities", ["text", "audio"]),
        ("web_search_options", {}),
        ("temperature", 1.5),
    ],
)
def test_parameters_anthropic_cannot_honour_are_ignored_and_named(param: str, value: Any) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}
    body[param] = value
    assert ignored_chat_params(body) == [param]
    request = to_anthropic_request(body)
    assert param not in request and "thinking" not in request


@pytest.mark.parametrize("param", ["functions", "function_call"])
def test_legacy_parameters_stay_refused_naming_the_parameter(param: str) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], param: "auto"}
    with pytest.raises(GatewayError) as info:
        to_anthropic_request(body)
    assert info.value.status == 400
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == param


def test_reasoning_effort_becomes_a_thinking_budget_and_drops_what_thinking_refuses() -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 20000, "reasoning_effort": "high", "temperature": 0.2, "messages": [{"role": "user", "content": "x"}]}
    assert ignored_chat_params(body) == ["temperature"]
    request = to_anthropic_request(body)
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert "temperature" not in request
    # Below Anthropic's minimum budget it cannot be carried, and says so.
    small = {**body, "max_tokens": 1000, "temperature": None}
    assert ignored_chat_params(small) == ["reasoning_effort"] and "thinking" not in to_anthropic_request(small)
    assert ignored_chat_params({**body, "reasoning_effort": "none", "temperature": None}) == []


def test_signed_thinking_rides_on_the_message_and_opens_the_next_assistant_turn() -> None:
    thinking = {"type": "thinking", "thinking": "Let me check.", "signature": "sig_abc"}
    redacted = {"type": "redacted_thinking", "data": "ENCRYPTED"}
    answer = from_anthropic_response(
        {"id": "msg_1", "model": "claude", "stop_reason": "tool_use", "usage": {},
         "content": [thinking, redacted, {"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "clock__now", "input": {}}]},
        created=0,
    )
    message = answer["choices"][0]["message"]
    assert message["reasoning_parts"] == [{"protocol": "anthropic", "part": thinking}, {"protocol": "anthropic", "part": redacted}]
    request = to_anthropic_request({"model": "claude", "messages": [
        {"role": "user", "content": "time?"}, message, {"role": "tool", "tool_call_id": "toolu_1", "content": "noon"},
    ]})
    assert request["messages"][1]["content"][:2] == [thinking, redacted]
    assert [b["type"] for b in request["messages"][1]["content"]] == ["thinking", "redacted_thinking", "text", "tool_use"]


def test_streamed_thinking_becomes_one_complete_part_when_its_block_stops() -> None:
    translator = StreamTranslator(model="claude", created=0, include_usage=False)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "check."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig_abc"}},
    ]
    assert [chunk for event in events for chunk in translator.feed(event)][1:] == []
    (chunk,) = translator.feed({"type": "content_block_stop", "index": 0})
    assert chunk["choices"][0]["delta"]["reasoning_parts"] == [
        {"protocol": "anthropic", "part": {"type": "thinking", "thinking": "Let me check.", "signature": "sig_abc"}}
    ]


def test_tools_become_input_schema_tools() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = translate(
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "Weather", "parameters": schema},
            },
            {"type": "function", "function": {"name": "now"}},
        ],
    )
    assert request["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": schema},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in request


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "now"}}, None, {"type": "tool", "name": "now"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: Any, expected: JSON) -> None:
    body: JSON = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "now"}}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(**body)["tool_choice"] == expected


def test_tool_round_trip_history_becomes_tool_use_and_merged_tool_results() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call.2",  # minted by another provider: not a valid Anthropic id
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call.2",
                "content": [{"type": "text", "text": "rain"}],
            },
            {"role": "user", "content": "thanks, and?"},
        ],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
    )
    assistant, results = request["messages"][1], request["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ],
    }
    assert results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "rain"}],
        },
        {"type": "text", "text": "thanks, and?"},
    ]
    assert len(request["messages"]) == 3


def test_tool_results_are_put_before_text_in_the_answering_user_turn() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ],
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    assert [b["type"] for b in request["messages"][2]["content"]] == ["tool_result", "text"]


def test_tool_history_without_tools_gets_stub_definitions_and_tool_choice_none() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ],
        tool_choice="none",
    )
    assert [t["name"] for t in request["tools"]] == ["f"]
    assert request["tool_choice"] == {"type": "none"}


def test_invalid_tool_call_arguments_are_a_client_error() -> None:
    with pytest.raises(GatewayError) as info:
        translate(
            messages=[
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{"},
                        }
                    ],
                },
            ]
        )
    assert info.value.status == 400
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_image_parts_become_image_blocks() -> None:
    request = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        ]
    )
    assert request["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_unsupported_image_type_and_audio_parts_are_refused() -> None:
    with pytest.raises(GatewayError) as info:
        translate(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}
                    ],
                }
            ]
        )
    assert info.value.param == "messages[0].content[0]"
    with pytest.raises(GatewayError) as info:
        translate(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
                    ],
                }
            ]
        )
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "messages[0].content[0]"


def test_pdf_file_parts_become_document_blocks() -> None:
    request = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                    {"type": "text", "text": "Summarise"},
                ],
            }
        ]
    )
    assert request["messages"][0]["content"][0] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }


def test_conversation_without_any_turn_is_refused() -> None:
    with pytest.raises(GatewayError) as info:
        to_anthropic_request({"model": "m", "messages": [{"role": "system", "content": "x"}]})
    assert info.value.param == "messages"


# -- responses -----------------------------------------------------------------


def test_response_text_tool_use_usage_and_thinking() -> None:
    completion = from_anthropic_response(
        {
            "id": "msg_01abc",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "secret reasoning", "signature": "s"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {"tz": "UTC"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5,
                "output_tokens": 7,
            },
        },
        created=1234,
    )
    assert completion["object"] == "chat.completion"
    assert completion["id"] == "chatcmpl-msg_01abc"
    assert completion["created"] == 1234
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    # Thinking is not part of the answer: it rides, signed, for the next round only.
    assert "secret" not in orjson.dumps({**choice["message"], "reasoning_parts": None}).decode()
    assert choice["message"]["reasoning_parts"][0]["part"]["thinking"] == "secret reasoning"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["type"] == "function"
    assert call["function"]["name"] == "now"
    assert orjson.loads(call["function"]["arguments"]) == {"tz": "UTC"}
    assert completion["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str, expected: str) -> None:
    message = {"id": "m", "model": "x", "content": [], "stop_reason": stop_reason, "usage": {}}
    assert from_anthropic_response(message, created=0)["choices"][0]["finish_reason"] == expected


def test_tool_only_response_has_null_content() -> None:
    message = {
        "id": "m",
        "model": "x",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    reply = from_anthropic_response(message, created=0)["choices"][0]["message"]
    assert reply["content"] is None
    assert reply["tool_calls"][0]["function"]["arguments"] == "{}"


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "retryable", "client_error"),
    [
        (400, "invalid_request_error", False, True),
        (401, "authentication_error", False, False),
        (403, "permission_error", False, False),
        (404, "not_found_error", False, True),
        (413, "request_too_large", False, True),
        (429, "rate_limit_error", True, False),
        (500, "api_error", True, False),
        (529, "overloaded_error", True, False),
    ],
)
def test_http_errors_map_to_upstream_errors(
    status: int, error_type: str, retryable: bool, client_error: bool
) -> None:
    payload = {"type": "error", "error": {"type": error_type, "message": "boom"}}
    error = upstream_error(status, payload, retry_after=3.0)
    assert isinstance(error, UpstreamError)
    assert (error.status, error.retryable, error.client_error) == (status, retryable, client_error)
    assert error.retry_after == 3.0
    assert error_type in error.message and error.detail == "boom"
    # The upstream's words reach the client only for errors about the client's own request.
    assert ("boom" in error.message) is client_error


def test_stream_error_event_status_comes_from_the_error_type() -> None:
    error = upstream_error(None, {"type": "error", "error": {"type": "overloaded_error"}})
    assert error.status == 529 and error.retryable


# -- streaming -----------------------------------------------------------------


def _events_with_tools() -> list[JSON]:
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_9",
                "model": "claude-x",
                "content": [],
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 4, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ty":"Oslo"}'}},
        {"type": "content_block_stop", "index": 2},
        {
            "type": "content_block_start",
            "index": 3,
            "content_block": {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}},
        },
        {"type": "content_block_stop", "index": 3},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]  # fmt: skip


def test_stream_translation_matches_openai_chunk_shapes() -> None:
    translator = StreamTranslator(model="fallback", created=99, include_usage=True)
    chunks = [c for e in _events_with_tools() for c in translator.feed(e)]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["id"] == "chatcmpl-msg_9" and c["model"] == "claude-x" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"] and "reasoning_parts" not in c["choices"][0]["delta"]]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert deltas[1] == {"content": "Checking"}
    assert deltas[2] == {
        "tool_calls": [
            {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}
        ]
    }  # fmt: skip
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}
    assert deltas[4] == {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}
    assert (
        deltas[5]["tool_calls"][0]["index"] == 1 and deltas[5]["tool_calls"][0]["id"] == "toolu_b"
    )
    # A call with no arguments still ends with parseable JSON.
    assert deltas[6] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}
    assert deltas[7] == {}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert "hmm" not in orjson.dumps([c for c in chunks if not c["choices"] or "reasoning_parts" not in c["choices"][0]["delta"]]).decode()
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 24,
        "completion_tokens": 30,
        "total_tokens": 54,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert translator.finished


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    translator = StreamTranslator(model="m", created=0, include_usage=False)
    chunks = [c for e in _events_with_tools() for c in translator.feed(e)]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_stream_error_event_raises_upstream_error() -> None:
    translator = StreamTranslator(model="m", created=0, include_usage=False)
    translator.feed({"type": "message_start", "message": {"id": "x", "usage": {}}})
    with pytest.raises(UpstreamError) as info:
        translator.feed(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    assert info.value.status == 529 and info.value.retryable


def test_fake_server_validation_catches_what_anthropic_refuses() -> None:
    base = {"model": "m", "max_tokens": 5}
    with pytest.raises(InvalidRequest, match="max_tokens"):
        validate_messages_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(InvalidRequest, match="alternate"):
        validate_messages_request(
            {
                **base,
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            }
        )
    with pytest.raises(InvalidRequest, match="tool_use_id"):
        validate_messages_request(
            {
                **base,
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "x"}]},
                ],
            }
        )  # fmt: skip
    with pytest.raises(InvalidRequest, match="must define tools"):
        validate_messages_request(
            {
                **base,
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
                ],
            }
        )  # fmt: skip
    with pytest.raises(InvalidRequest, match="Extra inputs"):
        validate_messages_request({**base, "n": 2, "messages": [{"role": "user", "content": "x"}]})


def test_the_clients_own_request_is_carried_verbatim_with_the_loops_turns_after_it() -> None:
    from runtime.providers.anthropic_translate import NATIVE_CARRY, native_carry, with_native_carry

    thinking = {"type": "thinking", "thinking": "Call it.", "signature": "sig_1"}
    native = {
        "model": "claude", "max_tokens": 5000, "thinking": {"type": "adaptive"}, "context_management": {"edits": []}, "unknown_field": 1,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "web_search", "type": "web_search_20250305"}],
        # A prefilled assistant turn: the loop's first turn joins it.
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Go", "cache_control": {"type": "ephemeral"}}]}, {"role": "assistant", "content": "Sure,"}],
    }
    chat = {
        "model": "claude", "max_tokens": 5000,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Go"}, {"role": "assistant", "content": "Sure,"},
                     {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "clock__now", "arguments": "{}"}}],
                      "reasoning_parts": [{"protocol": "anthropic", "part": thinking}]},
                     {"role": "tool", "tool_call_id": "toolu_1", "content": "noon"}],
        "tools": [{"type": "function", "function": {"name": "clock__now", "parameters": {"type": "object", "properties": {}}}}],
    }
    chat[NATIVE_CARRY] = native_carry(native, betas=[], beta_query=False, prefix=3)
    request = with_native_carry(to_anthropic_request(chat), chat)
    assert request["system"] == native["system"] and request["thinking"] == {"type": "adaptive"} and request["unknown_field"] == 1
    assert request["messages"][0] == native["messages"][0]
    assert request["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Sure,"}, thinking, {"type": "tool_use", "id": "toolu_1", "name": "clock__now", "input": {}}]}
    assert request["messages"][2]["content"][0]["type"] == "tool_result"
    assert [t["name"] for t in request["tools"]] == ["web_search", "clock__now"]
    assert NATIVE_CARRY not in request
