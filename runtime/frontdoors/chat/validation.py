"""Validation of chat-completion requests, with ``param`` naming the field at fault.

Hand-written rather than a pydantic model of the whole body: unknown fields
that OpenAI accepts must pass through untouched, and this is on the hot path.
It checks what OpenAI checks for the fields the gateway reads or forwards
(types, ranges, shapes), so that a bad value is a 400 here rather than a 500
or an upstream error later. :mod:`runtime.frontdoors.chat.schema` documents
the same body for the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import invalid_request, unsupported_parameter
from runtime.orchestration.code_mode import requested_mode

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
LEGACY = ("functions", "function_call")
# The largest value any provider accepts for a token count (a signed 32-bit integer).
MAX_TOKENS_LIMIT = 2**31 - 1
INT64 = 2**63
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_USER_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_chat_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    for field in LEGACY:
        if field in body:
            raise unsupported_parameter(
                field, f"'{field}' is deprecated and not supported; use 'tools' and 'tool_choice' instead."
            )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages[{i}]")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_request("'stream_options' must be an object.", param="stream_options")
        if not stream:
            raise invalid_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise invalid_request("'stream_options.include_usage' must be a boolean.", param="stream_options.include_usage")
    _validate_tools(body)
    n = body.get("n")
    if n is not None and (not _integer(n) or n < 1 or n > 128):
        raise invalid_request("'n' must be an integer from 1 to 128.", param="n")
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if not _number(value):
            raise invalid_request(f"'{name}' must be a number.", param=name)
        if not low <= value <= high:
            raise invalid_request(f"'{name}' must be between {low:g} and {high:g}; got {value}.", param=name)
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not _integer(value) or value < 1 or value > MAX_TOKENS_LIMIT):
            raise invalid_request(f"'{name}' must be an integer from 1 to {MAX_TOKENS_LIMIT}.", param=name)
    seed = body.get("seed")
    if seed is not None and (not _integer(seed) or not -INT64 <= seed < INT64):
        raise invalid_request("'seed' must be a 64-bit integer.", param="seed")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and (not _integer(top_logprobs) or not 0 <= top_logprobs <= 20):
        raise invalid_request("'top_logprobs' must be an integer from 0 to 20.", param="top_logprobs")
    for name in ("logprobs", "parallel_tool_calls", "store"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise invalid_request(f"'{name}' must be a boolean.", param=name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
        isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)
    ):
        raise invalid_request("'stop' must be a string or an array of up to 4 strings.", param="stop")
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise invalid_request("'response_format.type' must be 'text', 'json_object' or 'json_schema'.", param="response_format")
        if kind == "json_schema" and not isinstance(response_format.get("json_schema"), dict):
            raise invalid_request("'response_format.json_schema' must be an object.", param="response_format.json_schema")
    for name in ("user", "safety_identifier", "request_id"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise invalid_request(f"'{name}' must be a string.", param=name)
    plugin_ids = body.get("enabled_plugin_ids")
    if plugin_ids is not None and (
        not isinstance(plugin_ids, list) or not all(isinstance(p, str) for p in plugin_ids)
    ):
        raise invalid_request("'enabled_plugin_ids' must be an array of strings.", param="enabled_plugin_ids")
    requested_mode(body)
    return body


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("'tools' must be an array.", param="tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid_request("Each tool needs a 'function' with a 'name'.", param=f"tools[{i}].function")
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise invalid_request("'parameters' must be a JSON Schema object.", param=f"tools[{i}].function.parameters")
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise invalid_request("'tool_choice' must be 'none', 'auto', 'required' or a function.", param="tool_choice")
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") not in ("function", "allowed_tools", "custom") or (
        choice.get("type") == "function" and not (isinstance(function, dict) and isinstance(function.get("name"), str))
    ):
        raise invalid_request("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}.", param="tool_choice")


def _validate_message(message: Any, path: str) -> None:
    if not isinstance(message, dict):
        raise invalid_request("Each message must be an object.", param=path)
    role = message.get("role")
    if role == "function":
        raise unsupported_parameter(f"{path}.role", "The 'function' role is deprecated; use 'tool' messages.")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid_request(
            f"Invalid role {role!r}; expected one of {', '.join(sorted(ROLES))}.", param=f"{path}.role"
        )
    content = message.get("content")
    if role == "assistant":
        if content is None and not message.get("tool_calls") and not message.get("refusal"):
            raise invalid_request("An assistant message needs 'content' or 'tool_calls'.", param=f"{path}.content")
    elif content is None:
        raise invalid_request(f"A {role} message needs 'content'.", param=f"{path}.content")
    if content is not None and not isinstance(content, str | list):
        raise invalid_request("'content' must be a string or an array of content parts.", param=f"{path}.content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            _validate_part(part, role, f"{path}.content[{j}]")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid_request("'name' must be a string.", param=f"{path}.name")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_request("A tool message needs 'tool_call_id'.", param=f"{path}.tool_call_id")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise invalid_request("'tool_calls' must be an array.", param=f"{path}.tool_calls")
        for k, call in enumerate(tool_calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(function, dict) \
                    or not isinstance(function.get("name"), str) or not isinstance(function.get("arguments", ""), str):
                raise invalid_request(
                    "Each tool call needs an 'id' and a 'function' with a 'name' and 'arguments' (a JSON string).",
                    param=f"{path}.tool_calls[{k}]",
                )


def _validate_part(part: Any, role: str, path: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise invalid_request("Each content part needs a 'type'.", param=path)
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise invalid_request("A text part needs 'text' (a string).", param=f"{path}.text")
    elif kind == "refusal":
        if not isinstance(part.get("refusal"), str):
            raise invalid_request("A refusal part needs 'refusal' (a string).", param=f"{path}.refusal")
    elif kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            raise invalid_request("An image_url part needs 'image_url.url' (a string).", param=f"{path}.image_url")
    elif role == "user" and kind not in _USER_PART_TYPES:
        raise invalid_request(f"Unknown content part type '{kind}'.", param=f"{path}.type")
