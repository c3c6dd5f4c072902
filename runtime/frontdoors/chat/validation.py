"""Validation of chat-completion requests, with ``param`` naming the field at fault.

Hand-written rather than a pydantic model of the whole body: unknown fields
that OpenAI accepts must pass through untouched, and this is on the hot path.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import invalid_request, unsupported_parameter

ROLES = {"system", "developer", "user", "assistant", "tool"}
LEGACY = ("functions", "function_call")


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
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("'stream_options' must be an object.", param="stream_options")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("'tools' must be an array.", param="tools")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid_request("Each tool needs a 'function' with a 'name'.", param=f"tools[{i}].function")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 128):
        raise invalid_request("'n' must be an integer from 1 to 128.", param="n")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise invalid_request(f"'{name}' must be a number.", param=name)
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise invalid_request(f"'{name}' must be a positive integer.", param=name)
    plugin_ids = body.get("enabled_plugin_ids")
    if plugin_ids is not None and (
        not isinstance(plugin_ids, list) or not all(isinstance(p, str) for p in plugin_ids)
    ):
        raise invalid_request("'enabled_plugin_ids' must be an array of strings.", param="enabled_plugin_ids")
    return body


def _validate_message(message: Any, path: str) -> None:
    if not isinstance(message, dict):
        raise invalid_request("Each message must be an object.", param=path)
    role = message.get("role")
    if role == "function":
        raise unsupported_parameter(f"{path}.role", "The 'function' role is deprecated; use 'tool' messages.")
    if role not in ROLES:
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
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid_request("Each content part needs a 'type'.", param=f"{path}.content[{j}]")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_request("A tool message needs 'tool_call_id'.", param=f"{path}.tool_call_id")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise invalid_request("'tool_calls' must be an array.", param=f"{path}.tool_calls")
