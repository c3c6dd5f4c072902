"""An OpenAI-kind upstream called with the Responses API (``api: responses``).

The runtime speaks chat completions inside (:mod:`runtime.providers.base`); this adapter
translates each round to ``POST {base_url}/responses`` and the answer back, losslessly:

- The assistant turns' reasoning state (:mod:`runtime.reasoning`, protocol
  ``openai-responses``) goes back upstream verbatim, before the turn's text and calls, and
  every output item that is neither a message nor a function call (reasoning items with
  their ``encrypted_content``, hosted tools' calls, custom tool calls) comes back as such a
  part, so it survives plugway's own tool rounds, stored responses and sessions.
- Upstream, ``store`` is false and ``include`` asks for ``reasoning.encrypted_content``:
  plugway keeps the state, the upstream keeps nothing.
- A request that arrived on ``/v1/responses`` carries the client's own Responses fields
  under :data:`RESPONSES_NATIVE` (see ``runtime/frontdoors/responses``): they are sent as
  they are (unknown ones included), and the client's tools (hosted tools, namespaces,
  custom tools) replace their flattened chat copies; plugin tools are added beside them.
- Chat fields map where a faithful mapping exists: ``reasoning_effort`` ↔
  ``reasoning.effort``, ``max_completion_tokens``/``max_tokens`` → ``max_output_tokens``,
  ``response_format`` → ``text.format``, ``verbosity`` → ``text.verbosity``, a leading
  system message → ``instructions``, ``developer`` messages kept as such.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import orjson

from runtime.errors import UpstreamError
from runtime.json_types import JSON
from runtime.orchestration.naming import public_name
from runtime.providers.base import encode_body, request_headers
from runtime.providers.openai import OpenAIProvider, upstream_error_from_response
from runtime.providers.streaming import iter_sse_json
from runtime.reasoning import OPENAI_RESPONSES, REASONING_PARTS, parts_for_model, tagged

log = logging.getLogger("plugway.providers")

# Key on the internal chat body: {"fields": {...}, "tools": [...]}, the client's Responses request as it was.
RESPONSES_NATIVE: Final = "responses_native"
ENCRYPTED_REASONING: Final = "reasoning.encrypted_content"
# Chat fields that have the same name and meaning on the Responses API.
_SAME = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier", "service_tier",
         "prompt_cache_key", "prompt_cache_retention", "metadata", "truncation")
# Chat fields translated here (or the runtime's own): never copied as they are.
_TRANSLATED = frozenset({"model", "messages", "tools", "tool_choice", "stream", "stream_options", "max_tokens",
                         "max_completion_tokens", "response_format", "verbosity", "reasoning_effort", "n",
                         RESPONSES_NATIVE, *_SAME})
# Chat completions' own sampling and output fields, which the Responses API does not have.
CHAT_ONLY: Final = frozenset({"seed", "stop", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
                              "logit_bias", "modalities", "audio", "prediction", "web_search_options"})


def dropped_chat_fields(body: JSON) -> list[str]:
    """The chat-only fields a request sets that a Responses upstream cannot be sent."""
    return sorted(key for key in body if key in CHAT_ONLY and body[key] is not None)


def _namespaces(tools: list[JSON]) -> dict[str, tuple[str, str]]:
    """Flattened chat name -> (namespace, name) for the members of the client's namespace tools."""
    found: dict[str, tuple[str, str]] = {}
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for member in tool.get("tools") or ():
                if isinstance(member, dict) and isinstance(member.get("name"), str):
                    found[public_name(tool["name"], member["name"])] = (tool["name"], member["name"])
    return found


def _customs(tools: list[JSON]) -> set[str]:
    """Chat names of the client's custom (free-form) tools: their calls go upstream as custom_tool_call."""
    found = {tool["name"] for tool in tools if isinstance(tool, dict) and tool.get("type") == "custom" and isinstance(tool.get("name"), str)}
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            found.update(
                public_name(tool["name"], member["name"])
                for member in tool.get("tools") or ()
                if isinstance(member, dict) and member.get("type") == "custom" and isinstance(member.get("name"), str)
            )
    return found


def _covered(tools: list[JSON]) -> set[str]:
    """Chat tool names the client's own Responses tools already stand for."""
    names = set(_namespaces(tools))
    names.update(tool["name"] for tool in tools if isinstance(tool, dict) and isinstance(tool.get("name"), str))
    return names


def _function_tool(tool: JSON) -> JSON:
    function = tool.get("function") or {}
    out: JSON = {"type": "function", "name": function.get("name"), "parameters": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    # The Responses API makes function tools strict unless told otherwise; chat's default is not strict.
    out["strict"] = bool(function.get("strict", False))
    return out


def _text_parts(content: Any, kind: str) -> Any:
    if not isinstance(content, list):
        return content if content is not None else ""
    parts: list[JSON] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"type": kind, "text": part.get("text") or ""})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"})
        elif part.get("type") == "file":
            file = part.get("file") or {}
            parts.append({"type": "input_file", "file_data": file.get("file_data"), "filename": file.get("filename") or "file"})
    return parts


def free_input(arguments: str) -> str:
    """A custom tool's free-form input from the chat call's ``{"input": ...}`` arguments."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    return str(parsed.get("input") or "") if isinstance(parsed, dict) else arguments


def _call_item(call: JSON, namespaces: dict[str, tuple[str, str]], customs: set[str]) -> JSON:
    function = call.get("function") or {}
    name = function.get("name") or ""
    item: JSON
    if name in customs:
        item = {"type": "custom_tool_call", "call_id": call.get("id"), "name": name, "input": free_input(function.get("arguments") or "")}
    else:
        item = {"type": "function_call", "call_id": call.get("id"), "name": name, "arguments": function.get("arguments") or ""}
    if name in namespaces:
        item["namespace"], item["name"] = namespaces[name]
    return item


def input_items(messages: list[JSON], namespaces: dict[str, tuple[str, str]], customs: set[str] | None = None) -> list[JSON]:
    """Chat messages as Responses input items; an assistant turn's native parts go first, verbatim."""
    customs = customs or set()
    custom_calls: set[str] = set()
    items: list[JSON] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            items.extend(parts_for_model(message, OPENAI_RESPONSES))
            content = message.get("content")
            text = content if isinstance(content, str) else "".join(
                str(p.get("text") or "") for p in content or () if isinstance(p, dict) and p.get("type") == "text"
            )
            if text:
                items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]})
            for call in message.get("tool_calls") or ():
                item = _call_item(call, namespaces, customs)
                if item["type"] == "custom_tool_call":
                    custom_calls.add(str(call.get("id")))
                items.append(item)
        elif role == "tool":
            content = message.get("content")
            output: Any = content if isinstance(content, str) else _text_parts(content, "input_text")
            kind = "custom_tool_call_output" if str(message.get("tool_call_id")) in custom_calls else "function_call_output"
            items.append({"type": kind, "call_id": message.get("tool_call_id"), "output": output})
        elif role in ("system", "developer", "user"):
            items.append({"type": "message", "role": role, "content": _text_parts(message.get("content"), "input_text")})
    return items


def _tool_choice(choice: Any, namespaces: dict[str, tuple[str, str]]) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        return {"type": "function", "name": namespaces[name][1] if name in namespaces else name}
    return choice


def responses_body(body: JSON, *, stream: bool) -> JSON:
    """The chat body the runtime built, as a Responses API request."""
    native: JSON = body.get(RESPONSES_NATIVE) or {}
    native_tools: list[JSON] = list(native.get("tools") or [])
    # Tools may also arrive in items (a client-side tool_search's output, additional_tools).
    client_tools = native_tools + [
        tool for message in body.get("messages") or () for part in parts_for_model(message, OPENAI_RESPONSES) for tool in part.get("tools") or () if isinstance(tool, dict)
    ]
    namespaces = _namespaces(client_tools)
    customs = _customs(client_tools)
    out: JSON = {"model": body["model"]}
    messages = list(body.get("messages") or [])
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        out["instructions"] = messages.pop(0)["content"]
    out["input"] = input_items(messages, namespaces, customs)
    covered = _covered(client_tools)
    tools = native_tools + [
        _function_tool(tool) for tool in body.get("tools") or () if (tool.get("function") or {}).get("name") not in covered
    ]
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(body["tool_choice"], namespaces)
    for name in _SAME:
        if body.get(name) is not None:
            out[name] = body[name]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        out["max_output_tokens"] = limit
    text: JSON = {}
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        text["format"] = {"type": "json_schema", **(response_format.get("json_schema") or {})}
    elif isinstance(response_format, dict) and response_format.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    if body.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    dropped = dropped_chat_fields(body)
    if dropped:
        # The chat door names them in x-plugway-ignored-params (ignored_chat_params); the log says so too.
        log.info("chat fields with no Responses API counterpart not sent upstream: %s", ", ".join(dropped))
    # Fields of the chat body the runtime does not know (an extension a client passed on) go too.
    out.update({key: value for key, value in body.items() if key not in _TRANSLATED and key not in CHAT_ONLY})
    fields: JSON = native.get("fields") or {}
    for key, value in fields.items():
        if key == "reasoning" and isinstance(value, dict) and isinstance(out.get("reasoning"), dict):
            out["reasoning"] = {**out["reasoning"], **value}
        else:
            out[key] = value
    # plugway keeps the conversation; the upstream keeps nothing and hands the reasoning state back.
    out["store"] = False
    include = [entry for entry in out.get("include") or () if isinstance(entry, str)]
    out["include"] = include if ENCRYPTED_REASONING in include else [*include, ENCRYPTED_REASONING]
    out["stream"] = stream
    return out


def _flat_name(item: JSON) -> str:
    name = str(item.get("name") or "")
    namespace = item.get("namespace")
    return public_name(namespace, name) if isinstance(namespace, str) and namespace else name


def _wrapped(item: JSON) -> str:
    """A custom tool call's free-form input as a chat call's arguments."""
    return orjson.dumps({"input": str(item.get("input") or "")}).decode()


def chat_usage(usage: Any) -> JSON | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": int(usage.get("total_tokens") or prompt + completion)}
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": int(reasoning)}
    return out


def _finish(response: JSON, has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    reason = (response.get("incomplete_details") or {}).get("reason")
    if response.get("status") == "incomplete":
        return "content_filter" if reason == "content_filter" else "length"
    return "stop"


def chat_completion(response: JSON) -> JSON:
    """A Responses API response as a chat.completion, its native items kept as reasoning parts."""
    text: list[str] = []
    refusal: list[str] = []
    calls: list[JSON] = []
    parts: list[JSON] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusal.append(str(part.get("refusal") or ""))
        elif kind == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function", "function": {"name": _flat_name(item), "arguments": item.get("arguments") or ""}})
        elif kind == "custom_tool_call":
            calls.append({"id": item.get("call_id"), "type": "function", "function": {"name": _flat_name(item), "arguments": _wrapped(item)}})
        elif kind is not None:
            parts.append(item)
    message: JSON = {"role": "assistant", "content": "".join(text) or None}
    if refusal:
        message["refusal"] = "".join(refusal)
    if parts:
        message[REASONING_PARTS] = tagged(OPENAI_RESPONSES, parts)
    if calls:
        message["tool_calls"] = calls
    completion: JSON = {
        "id": response.get("id"),
        "object": "chat.completion",
        "created": response.get("created_at"),
        "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:
        completion["usage"] = usage
    return completion


class _Chunks:
    """Responses stream events → chat.completion.chunk dicts."""

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.calls: dict[str, int] = {}  # function_call item id -> tool call index
        self.streamed_arguments: set[str] = set()
        self.done = False

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def convert(self, event: JSON) -> list[JSON]:
        kind = event.get("type")
        if kind in ("response.created", "response.in_progress"):
            response = event.get("response") or {}
            self.id, self.model, self.created = response.get("id"), response.get("model"), response.get("created_at")
            return [self._chunk({"role": "assistant", "content": ""})] if kind == "response.created" else []
        if kind == "response.output_text.delta":
            return [self._chunk({"content": event.get("delta") or ""})]
        if kind == "response.refusal.delta":
            return [self._chunk({"refusal": event.get("delta") or ""})]
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") in ("function_call", "custom_tool_call"):
                index = self.calls[str(item.get("id"))] = len(self.calls)
                call = {"index": index, "id": item.get("call_id"), "type": "function", "function": {"name": _flat_name(item), "arguments": ""}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "response.function_call_arguments.delta":
            position = self.calls.get(str(event.get("item_id")))
            if position is None or not event.get("delta"):
                return []
            self.streamed_arguments.add(str(event.get("item_id")))
            return [self._chunk({"tool_calls": [{"index": position, "function": {"arguments": event["delta"]}}]})]
        if kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                item_id = str(item.get("id"))
                if item_id in self.calls and item_id not in self.streamed_arguments and item.get("arguments"):
                    return [self._chunk({"tool_calls": [{"index": self.calls[item_id], "function": {"arguments": item["arguments"]}}]})]
                return []
            if item.get("type") == "custom_tool_call":
                item_id = str(item.get("id"))
                if item_id in self.calls:
                    return [self._chunk({"tool_calls": [{"index": self.calls[item_id], "function": {"arguments": _wrapped(item)}}]})]
                return []
            if item.get("type") == "message" or not item.get("type"):
                return []
            # Reasoning items (complete, with encrypted_content only here), hosted and custom tool calls.
            return [self._chunk({REASONING_PARTS: tagged(OPENAI_RESPONSES, [item])})]
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            response = event.get("response") or {}
            out = [self._chunk({}, _finish(response, bool(self.calls)))]
            usage = chat_usage(response.get("usage"))
            if usage is not None:
                out.append({**self._chunk({}), "choices": [], "usage": usage})
            return out
        if kind in ("response.failed", "error"):
            error = (event.get("response") or {}).get("error") if kind == "response.failed" else event
            detail = (error or {}).get("message") if isinstance(error, dict) else None
            raise UpstreamError(f"provider '{self.provider_id}' reported an error mid-stream", retryable=False, detail=str(detail or kind))
        return []


class OpenAIResponsesProvider(OpenAIProvider):
    """An ``openai``-kind upstream called with the Responses API: the chat adapter's connection,
    JSON posting and embeddings, with chat turned into Responses requests and back."""

    path = "/responses"

    def ignored_chat_params(self, body: JSON) -> list[str]:
        """The chat fields this upstream is not sent (the chat door names or, strict, refuses them)."""
        return dropped_chat_fields(body)

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        response = await self._post_json(self._url, responses_body(body, stream=False), request_id)
        if response.get("status") == "failed":
            detail = (response.get("error") or {}).get("message")
            raise UpstreamError(f"provider '{self.id}' answered a failed response", retryable=False, detail=str(detail))
        return chat_completion(response)

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        stream = await self._http.open_stream(self._url, encode_body(responses_body(body, stream=True)), request_headers(request_id))
        chunks = _Chunks(self.id)
        try:
            if stream.status >= 400:
                raise upstream_error_from_response(self.id, stream.status, stream.headers, await stream.read())
            events: AsyncIterator[JSON] = iter_sse_json(stream.lines())
            async for event in events:
                for chunk in chunks.convert(event):
                    yield chunk
                if chunks.done:
                    stream.complete = True
                    break
            if not chunks.done:
                # A cut-off stream must not pass for a complete answer.
                raise UpstreamError(f"provider '{self.id}' stream ended before response.completed")
        finally:
            self._http.close_stream(stream)
