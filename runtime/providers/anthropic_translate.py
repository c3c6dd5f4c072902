"""OpenAI chat-completions <-> Anthropic Messages translation, both directions.

Outbound (the Anthropic provider adapter): OpenAI requests to Anthropic, and
Anthropic responses and streams back. Inbound (the ``/v1/messages`` front
door): Anthropic requests to OpenAI messages and tools, and OpenAI's finish
reasons, usage and errors to Anthropic's, from the same tables.

Pure functions and one small state machine (:class:`StreamTranslator`); no I/O,
so every rule here is unit-tested without a network.

Request parameters are handled in one of four ways: translated
(``reasoning_effort`` becomes an extended-thinking budget, :data:`THINKING_BUDGETS`);
*dropped*, when leaving them out cannot change the answer (``seed``, ``store``,
``metadata``, ``service_tier``, ``prediction``, ``prompt_cache_key``, zero
penalties, ``n: 1``, ``logprobs: false``, ``response_format: {"type": "text"}``,
an image's ``detail``, a message's ``name``); *ignored and named*
(:func:`ignored_chat_params`, which the front door reports in
``x-plugway-ignored-params`` or refuses under ``unsupported_params: refuse``),
when Anthropic cannot honour them (``n > 1``, ``logprobs``, ``top_logprobs``,
``logit_bias``, non-zero penalties, JSON ``response_format``, a
``reasoning_effort`` that cannot become a budget, audio, ``web_search_options``,
``temperature > 1``, sampling settings thinking refuses); or *refused* with
``400 unsupported_parameter``: the legacy ``functions`` / ``function_call``.
Unknown keys (gateway extensions such as ``enabled_plugin_ids``) are ignored.

Reasoning state (signed ``thinking`` / ``redacted_thinking`` blocks) rides on
the chat message under ``reasoning_parts`` (:mod:`runtime.reasoning`): read
from answers and streams, re-emitted at the start of the assistant turn on the
next round, as Anthropic requires when a tool round follows.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from runtime.errors import UpstreamError, invalid_request, unsupported_parameter
from runtime.json_types import JSON
from runtime.reasoning import (
    ANTHROPIC,
    REASONING_PARTS,
    MalformedCarrier,
    from_anthropic_block,
    parts_for_model,
    tagged,
)

ANTHROPIC_VERSION = "2023-06-01"
# The blocks that hold a model's signed reasoning: echoed back unchanged on the next tool round.
THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# Output ceilings differ by family; these are defaults for a request that sets
# no limit (Anthropic requires one), not the hard maxima, so that a forgotten
# max_tokens does not reserve a model's whole output budget.
_MAX_TOKENS_BY_PREFIX: tuple[tuple[str, int], ...] = (
    ("claude-3-5-", 8192),
    ("claude-3-7-", 16384),
    ("claude-3-", 4096),
    ("claude-sonnet-4", 16384),
    ("claude-opus-4", 16384),
    ("claude-haiku-4", 16384),
)

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Failures caused by the request itself: another attempt or provider gets the same answer.
_CLIENT_ERROR_STATUSES = frozenset({400, 404, 413, 422})

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,]*)?;base64,(?P<data>.*)$", re.S)
_TOOL_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_SAFE_ERROR_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def default_max_tokens_for(model: str, fallback: int) -> int:
    """Anthropic requires ``max_tokens``; pick a family default when the client gave none."""
    for prefix, value in _MAX_TOKENS_BY_PREFIX:
        if model.startswith(prefix):
            return value
    return fallback


# ---------------------------------------------------------------------------
# request: OpenAI -> Anthropic
# ---------------------------------------------------------------------------


# reasoning_effort as an extended-thinking budget (Anthropic's minimum is 1024 tokens);
# "none" is thinking left off, which is what Anthropic does without a ``thinking`` field.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024


def _max_tokens(body: JSON, default_max_tokens: int) -> Any:
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens_for(str(body.get("model") or ""), default_max_tokens)
    return max_tokens


def thinking_for(body: JSON, default_max_tokens: int = 4096) -> JSON | None:
    """The ``thinking`` a chat body's ``reasoning_effort`` asks for, or None (off, or not carried)."""
    budget = THINKING_BUDGETS.get(str(body.get("reasoning_effort")))
    max_tokens = _max_tokens(body, default_max_tokens)
    if budget is None or not isinstance(max_tokens, int) or max_tokens <= MIN_THINKING_BUDGET:
        return None
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        return None  # Anthropic's thinking allows only tool_choice auto or none
    return {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def ignored_chat_params(body: JSON, default_max_tokens: int = 4096) -> list[str]:
    """The chat-completions fields an Anthropic model cannot honour: dropped, and named by the door.

    Legacy ``functions`` / ``function_call`` are not here: they stay refused
    (:func:`to_anthropic_request`).
    """
    ignored: list[str] = []
    n = body.get("n")
    if n is not None and n != 1:
        ignored.append("n")
    if body.get("logprobs"):
        ignored.append("logprobs")
    if body.get("top_logprobs") is not None:
        ignored.append("top_logprobs")
    if body.get("logit_bias"):
        ignored.append("logit_bias")
    ignored.extend(penalty for penalty in ("presence_penalty", "frequency_penalty") if body.get(penalty))
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        ignored.append("response_format")
    effort = body.get("reasoning_effort")
    thinking = thinking_for(body, default_max_tokens)
    if effort is not None and effort != "none" and thinking is None:
        ignored.append("reasoning_effort")
    if body.get("audio") is not None:
        ignored.append("audio")
    modalities = body.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        ignored.append("modalities")
    if body.get("web_search_options") is not None:
        ignored.append("web_search_options")
    verbosity = body.get("verbosity")
    if verbosity is not None and verbosity != "medium":
        ignored.append("verbosity")
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and (temperature > 1 or (thinking is not None and temperature != 1)):
        ignored.append("temperature")  # above Anthropic's range, or set beside thinking (which refuses it)
    if thinking is not None and body.get("top_k") is not None:
        ignored.append("top_k")
    top_p = body.get("top_p")
    if thinking is not None and isinstance(top_p, int | float) and top_p < 0.95:
        ignored.append("top_p")
    return ignored


def _refuse_legacy(body: JSON) -> None:
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise unsupported_parameter(legacy)


def _safe_tool_id(tool_id: str) -> str:
    # Anthropic ids must match ^[a-zA-Z0-9_-]+$; ids minted by other providers may not.
    return _TOOL_ID_UNSAFE.sub("_", tool_id) or "toolu_empty"


def _text_block(text: str) -> JSON | None:
    # Anthropic rejects empty or whitespace-only text blocks.
    return {"type": "text", "text": text} if text.strip() else None


def _image_block(url: str, param: str) -> JSON:
    match = _DATA_URL.match(url)
    if match:
        media_type = match.group("media").lower()
        if media_type == "image/jpg":
            media_type = "image/jpeg"
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise invalid_request(
                f"Unsupported image type '{media_type}' (Anthropic accepts jpeg, png, gif, webp).",
                param=param,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": match.group("data")},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_request("image_url must be a data: URL or an http(s) URL.", param=param)


def _file_block(part: JSON, param: str) -> JSON:
    file = part.get("file") or {}
    match = _DATA_URL.match(file.get("file_data") or "")
    if match and match.group("media").lower() == "application/pdf":
        return {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": match.group("data"),
            },
        }
    raise unsupported_parameter(
        param, "Only inline PDF files (file_data data: URLs) are supported."
    )


def _content_blocks(content: Any, param: str, *, allow_media: bool) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        block = _text_block(content)
        return [block] if block else []
    if not isinstance(content, list):
        raise invalid_request("content must be a string or an array of parts.", param=param)
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise invalid_request("content parts must be objects.", param=part_param)
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            block = _text_block(part.get("text") or part.get("refusal") or "")
            if block:
                blocks.append(block)
        elif kind == "image_url" and allow_media:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid_request("image_url.url must be a string.", param=part_param)
            blocks.append(_image_block(url, part_param))
        elif kind == "file" and allow_media:
            blocks.append(_file_block(part, part_param))
        else:
            raise unsupported_parameter(
                part_param,
                f"Content part type '{kind}' is not supported for Anthropic models here.",
            )
    return blocks


def _system_text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b["text"] for b in _content_blocks(content, param, allow_media=False))


def _tool_use_block(call: JSON, param: str) -> JSON:
    function = call.get("function") or {}
    raw = function.get("arguments") or ""
    try:
        arguments = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise invalid_request(
            "Tool call arguments must be a JSON object.", param=f"{param}.function.arguments"
        ) from None
    if not isinstance(arguments, dict):
        raise invalid_request(
            "Tool call arguments must be a JSON object.", param=f"{param}.function.arguments"
        )
    return {
        "type": "tool_use",
        "id": _safe_tool_id(str(call.get("id") or "")),
        "name": function.get("name") or "",
        "input": arguments,
    }


def _tool_result_block(message: JSON, param: str) -> JSON:
    block: JSON = {
        "type": "tool_result",
        "tool_use_id": _safe_tool_id(str(message.get("tool_call_id") or "")),
    }
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _content_blocks(content, f"{param}.content", allow_media=True)
        if parts:
            block["content"] = parts
    return block


def system_fold(text: str) -> str:
    """A mid-conversation system message, folded into the user turn at its place."""
    return f"<system>\n{text}\n</system>"


def _turns(messages: list[Any]) -> tuple[list[str], list[JSON]]:
    """System texts, and user/assistant turns with consecutive same-role messages merged.

    System and developer messages before the first turn make the top-level
    ``system``. One later in the conversation keeps its place instead: Anthropic
    has no system turn, so its text is folded into the user turn there, marked
    as ``<system>`` text, rather than moved to the top where it would read as
    if it had been said first.
    """
    system: list[str] = []
    turns: list[JSON] = []

    def append(role: str, blocks: list[JSON]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid_request("Each message must be an object.", param=param)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _system_text(content, f"{param}.content")
            if text.strip():
                if turns:
                    append("user", [{"type": "text", "text": system_fold(text)}])
                else:
                    system.append(text)
        elif role == "user":
            append("user", _content_blocks(content, f"{param}.content", allow_media=True))
        elif role == "assistant":
            if message.get("function_call") is not None:
                raise unsupported_parameter(f"{param}.function_call")
            # Signed thinking opens the turn, as Anthropic produced it and requires it back.
            blocks = [dict(part) for part in parts_for_model(message, ANTHROPIC)]
            blocks += _content_blocks(content, f"{param}.content", allow_media=False)
            if not blocks and message.get("refusal"):
                blocks = [b for b in [_text_block(message["refusal"])] if b]
            for k, call in enumerate(message.get("tool_calls") or []):
                blocks.append(_tool_use_block(call, f"{param}.tool_calls[{k}]"))
            append("assistant", blocks)
        elif role == "tool":
            append("user", [_tool_result_block(message, param)])
        elif role == "function":
            raise unsupported_parameter(
                f"{param}.role", "The legacy 'function' role is not supported."
            )
        else:
            raise invalid_request(f"Unknown message role '{role}'.", param=f"{param}.role")

    for turn in turns:
        if turn["role"] == "user":
            # tool_result blocks must open the user turn that answers a tool_use turn.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _tools(tools: list[Any]) -> list[JSON]:
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise unsupported_parameter(
                f"tools[{i}]", "Only 'function' tools are supported for Anthropic models."
            )
        function = tool.get("function") or {}
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        converted: JSON = {"name": function.get("name") or "", "input_schema": schema}
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> JSON | None:
    if choice is None or choice == "auto":
        converted: JSON = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise invalid_request("tool_choice.function.name is required.", param="tool_choice")
        converted = {"type": "tool", "name": name}
    else:
        raise unsupported_parameter("tool_choice")
    if parallel is False:
        converted["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return converted


def to_anthropic_request(body: JSON, *, default_max_tokens: int = 4096) -> JSON:
    """Translate an OpenAI chat-completions body into a Messages API body.

    Raises :class:`GatewayError` (400) for parameters Anthropic cannot honour.
    ``stream`` is left to the caller.
    """
    _refuse_legacy(body)
    ignored = set(ignored_chat_params(body, default_max_tokens))
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise invalid_request("'messages' must be an array.", param="messages")
    system, turns = _turns(messages)
    if not turns:
        raise invalid_request(
            "At least one non-empty user or assistant message is required.", param="messages"
        )
    model = str(body.get("model") or "")
    max_tokens = _max_tokens(body, default_max_tokens)
    request: JSON = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None and key not in ignored:
            request[key] = body[key]
    thinking = thinking_for(body, default_max_tokens)
    if thinking is not None:
        request["thinking"] = thinking
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = body.get("user") or body.get("safety_identifier")
    if user:
        request["metadata"] = {"user_id": str(user)}

    tools = body.get("tools") or []
    if tools:
        request["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    else:
        used = _tool_names_in(turns)
        if used:
            # Anthropic refuses tool_use/tool_result blocks unless tools are defined;
            # the history may carry them after a final round asked without tools.
            # Stub definitions plus tool_choice none keep OpenAI's "no tools" meaning.
            request["tools"] = [
                {"name": name, "input_schema": {"type": "object", "properties": {}}}
                for name in used
            ]
            request["tool_choice"] = {"type": "none"}
    return request


# ---------------------------------------------------------------------------
# the client's own Messages request, carried through the loop
# ---------------------------------------------------------------------------

# A chat body key the /v1/messages door sets when every model along the chain is Anthropic's:
# the client's request as it came, so that each round sends it natively with only the loop's
# own turns and plugin tools translated. Never on a wire: the Anthropic adapter removes it.
NATIVE_CARRY = "anthropic_native"
# The beta Anthropic needs for thinking between tool calls (Claude 4 models before adaptive thinking).
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"
ANTHROPIC_BETA = "anthropic-beta"
# Fields of the client's body that the loop decides round by round.
_LOOP_FIELDS = frozenset({"model", "messages", "tools", "tool_choice", "stream", "mcp_servers", NATIVE_CARRY})


def native_carry(body: JSON | None, *, betas: list[str], beta_query: bool, prefix: int | None = None) -> JSON:
    """What :data:`NATIVE_CARRY` holds: the client's body, its betas, and how many chat messages its
    own ``messages`` became (``prefix``; None when they must be sent translated)."""
    return {"body": body, "betas": betas, "beta_query": beta_query, "prefix": prefix}


def _as_blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content or [])


def _joined(head: list[JSON], tail: list[JSON]) -> list[JSON]:
    """The client's turns then the loop's, one turn where the roles meet (a prefilled assistant turn)."""
    out = list(head)
    for turn in tail:
        if out and out[-1].get("role") == turn["role"]:
            out[-1] = {**out[-1], "content": _as_blocks(out[-1].get("content")) + turn["content"]}
        else:
            out.append(turn)
    return out


def with_native_carry(request: JSON, chat_body: JSON) -> JSON:
    """A translated round's request with the client's own Messages request put back.

    Every field of the client's body goes as it came (``thinking``,
    ``context_management``, ``output_config``, ``metadata``, ``system`` with its
    ``cache_control``, fields plugway does not know); the client's messages go
    verbatim, followed by the loop's rounds translated (their thinking first);
    the client's tools verbatim, then the plugin tools of this round.
    """
    carry = chat_body.get(NATIVE_CARRY)
    if not isinstance(carry, dict) or not isinstance(carry.get("body"), dict):
        return request
    native: JSON = carry["body"]
    out = {**request, **{k: v for k, v in native.items() if k not in _LOOP_FIELDS}}
    prefix = carry.get("prefix")
    if isinstance(prefix, int) and isinstance(native.get("messages"), list):
        _, tail = _turns(list(chat_body.get("messages") or [])[prefix:])
        out["messages"] = _joined(native["messages"], tail)
    client_tools = [t for t in native.get("tools") or () if isinstance(t, dict)]
    if client_tools:
        names = {t.get("name") for t in client_tools}
        offered = [t for t in request.get("tools") or () if t.get("name") not in names]
        out["tools"] = client_tools + offered
    return out


def betas_for(request: JSON, client_betas: list[str], configured: str | None = None) -> str | None:
    """The ``anthropic-beta`` header: the provider's own, the client's, and any plugway's request needs."""
    betas = [b.strip() for b in (configured or "").split(",") if b.strip()]
    betas += client_betas
    thinking = request.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and request.get("tools"):
        betas.append(INTERLEAVED_THINKING_BETA)
    merged = list(dict.fromkeys(betas))
    return ", ".join(merged) if merged else None


def _tool_names_in(turns: list[JSON]) -> list[str]:
    names: dict[str, None] = {}
    has_result = False
    for turn in turns:
        for block in turn["content"]:
            if block["type"] == "tool_use":
                names[block["name"]] = None
            elif block["type"] == "tool_result":
                has_result = True
    if has_result and not names:
        names["tool"] = None
    return list(names)


# ---------------------------------------------------------------------------
# response: Anthropic -> OpenAI
# ---------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str:
    return _STOP_REASONS.get(stop_reason or "end_turn", "stop")


def openai_usage(usage: JSON) -> JSON:
    """Anthropic counts cached input apart from ``input_tokens``; OpenAI includes it.

    A count that is not a whole number is passed on as it came: the accounting path
    (``runtime.billing.checked_usage``) replaces it with plugway's own estimate.
    """
    cache_read = _whole(usage.get("cache_read_input_tokens") or 0)
    cache_write = _whole(usage.get("cache_creation_input_tokens") or 0)
    input_tokens = _whole(usage.get("input_tokens") or 0)
    output_tokens = usage.get("output_tokens") or 0
    prompt: Any = (
        input_tokens + cache_read + cache_write
        if input_tokens is not None and cache_read is not None and cache_write is not None
        else usage.get("input_tokens")
    )
    completion: Any = output_tokens if _whole(output_tokens) is not None else usage.get("output_tokens")
    counts: JSON = {"prompt_tokens": prompt, "completion_tokens": completion}
    if _whole(prompt) is not None and _whole(completion) is not None:
        counts["total_tokens"] = prompt + completion
    counts["prompt_tokens_details"] = {"cached_tokens": cache_read if cache_read is not None else 0}
    return counts


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def completion_id(message_id: str) -> str:
    return f"chatcmpl-{message_id}"


def from_anthropic_response(message: JSON, *, created: int) -> JSON:
    """Translate a Messages API response into an OpenAI ``chat.completion``."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    thinking: list[JSON] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind in THINKING_BLOCKS:
            thinking.append(block)
        elif kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        # server-tool blocks are not part of the answer; thinking rides along for the next round.
    text = "".join(texts)
    reply: JSON = {
        "role": "assistant",
        "content": text if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply[REASONING_PARTS] = tagged(ANTHROPIC, thinking)
    return {
        "id": completion_id(str(message.get("id") or "")),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or "",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": openai_usage(message.get("usage") or {}),
    }


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def upstream_error(
    status: int | None, payload: Any, *, retry_after: float | None = None
) -> UpstreamError:
    """An :class:`UpstreamError` for an Anthropic error body (HTTP or a stream ``error`` event)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    error_type = str(error.get("type")) if isinstance(error, dict) else "api_error"
    detail = str(error.get("message")) if isinstance(error, dict) else "unreadable error body"
    if status is None:
        status = _ERROR_TYPE_STATUS.get(error_type, 500)
    retryable = status in (408, 409, 429) or status >= 500
    client_error = status in _CLIENT_ERROR_STATUSES
    if not _SAFE_ERROR_TYPE.match(error_type):
        error_type = "error"
    # The upstream's words reach the client only when they are about its own request.
    message = f"Anthropic {status} {error_type}" + (f": {detail}" if client_error else "")
    return UpstreamError(
        message,
        status=status,
        retryable=retryable,
        client_error=client_error,
        retry_after=retry_after,
        detail=detail,
    )


# ---------------------------------------------------------------------------
# streaming: Anthropic events -> OpenAI chunks
# ---------------------------------------------------------------------------


class StreamTranslator:
    """Turns Messages API stream events into ``chat.completion.chunk`` dicts.

    Feed events in order; each call returns the chunks to send (often none).
    Tool calls become OpenAI's indexed deltas: the first chunk of a call has
    index, id, type, name and empty arguments; later ones index and a fragment.
    """

    def __init__(self, *, model: str, created: int, include_usage: bool) -> None:
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.id = completion_id("")
        self.finished = False
        self.stop_reason: str | None = None
        self._usage: JSON = {}
        # Anthropic block index -> OpenAI tool-call index, for tool_use blocks only.
        self._tool_index: dict[int, int] = {}
        self._tool_has_arguments: dict[int, bool] = {}
        self._text_blocks: set[int] = set()
        # Anthropic block index -> the thinking block being assembled (thinking_delta, signature_delta).
        self._thinking: dict[int, JSON] = {}

    @property
    def usage(self) -> JSON:
        return openai_usage(self._usage)

    def _chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        chunk: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event: JSON) -> list[JSON]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = completion_id(str(message.get("id") or ""))
            self.model = message.get("model") or self.model
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": "", "refusal": None})]
        if kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "content_block_stop":
            index = int(event.get("index", 0))
            if index in self._thinking:
                # A whole, signed block: the part goes out once, complete (runtime.reasoning).
                return [self._chunk({REASONING_PARTS: tagged(ANTHROPIC, [self._thinking.pop(index)])})]
            if index in self._tool_index and not self._tool_has_arguments[index]:
                # A call without arguments streams no fragment; OpenAI clients expect "{}".
                self._tool_has_arguments[index] = True
                return [self._arguments_chunk(index, "{}")]
            return []
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            # message_delta usage is cumulative and may restate input counts.
            self._usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            return [self._chunk({}, finish_reason(self.stop_reason))]
        if kind == "message_stop":
            self.finished = True
            if not self.include_usage:
                return []
            return [
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": self.usage,
                }
            ]
        if kind == "error":
            raise upstream_error(None, event)
        return []  # ping, and event types added after this adapter was written

    def _block_start(self, index: int, block: JSON) -> list[JSON]:
        kind = block.get("type")
        if kind in THINKING_BLOCKS:
            self._thinking[index] = dict(block)
            return []
        if kind == "text":
            self._text_blocks.add(index)
            text = block.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if kind == "tool_use":
            tool_index = len(self._tool_index)
            self._tool_index[index] = tool_index
            self._tool_has_arguments[index] = False
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _arguments_chunk(self, index: int, fragment: str) -> JSON:
        call = {"index": self._tool_index[index], "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]})

    def _block_delta(self, index: int, delta: JSON) -> list[JSON]:
        kind = delta.get("type")
        if kind == "text_delta" and index in self._text_blocks:
            text = delta.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if kind == "input_json_delta" and index in self._tool_index:
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            self._tool_has_arguments[index] = True
            return [self._arguments_chunk(index, fragment)]
        block = self._thinking.get(index)
        if block is not None and kind == "thinking_delta":
            block["thinking"] = (block.get("thinking") or "") + str(delta.get("thinking") or "")
        elif block is not None and kind == "signature_delta":
            block["signature"] = (block.get("signature") or "") + str(delta.get("signature") or "")
        return []  # citations_delta and thinking so far: not part of the answer


# ---------------------------------------------------------------------------
# inbound: the /v1/messages front door speaks Anthropic to its clients, and
# runs any model through the OpenAI-shaped runtime. The same tables as above,
# read the other way.
# ---------------------------------------------------------------------------

# finish_reason -> stop_reason: the first Anthropic reason that maps to each OpenAI one.
_FINISH_TO_STOP = {openai: anthropic for anthropic, openai in reversed(list(_STOP_REASONS.items()))}
# status -> error type, for errors plugway itself answers on /v1/messages.
_STATUS_ERROR_TYPE = {status: kind for kind, status in reversed(list(_ERROR_TYPE_STATUS.items()))}


def anthropic_stop_reason(finish_reason: str | None) -> str:
    return _FINISH_TO_STOP.get(finish_reason or "stop", "end_turn")


def anthropic_error_type(status: int) -> str:
    if status in _STATUS_ERROR_TYPE:
        return _STATUS_ERROR_TYPE[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_usage(usage: JSON) -> JSON:
    """OpenAI usage (cached input included in prompt_tokens) as Anthropic counts it."""
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _openai_image(source: Any, param: str) -> JSON:
    if not isinstance(source, dict):
        raise invalid_request("An image block needs a 'source'.", param=param)
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise unsupported_parameter(param, "Images must be base64 or url sources.")


def _openai_parts(blocks: Any, param: str) -> list[JSON]:
    """Anthropic content blocks (text, image, document) as OpenAI content parts."""
    if isinstance(blocks, str):
        return [{"type": "text", "text": blocks}]
    if not isinstance(blocks, list):
        raise invalid_request("'content' must be a string or an array of blocks.", param=param)
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        block_param = f"{param}[{j}]"
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise invalid_request("A text block needs 'text' (a string).", param=f"{block_param}.text")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_openai_image(block.get("source"), f"{block_param}.source"))
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
                parts.append({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{source.get('data')}", "filename": "document.pdf"}})
            elif source.get("type") == "text":
                parts.append({"type": "text", "text": str(source.get("data") or "")})
            else:
                raise unsupported_parameter(block_param, "Documents must be base64 PDFs or text.")
        elif kind == "tool_reference" and isinstance(block.get("tool_name"), str):
            # A tool search's result (Claude Code's ToolSearch): the tool is now loaded. Other models
            # get every tool in full already; the reference becomes what it says.
            parts.append({"type": "text", "text": f"Tool {block['tool_name']} loaded."})
        else:
            raise unsupported_parameter(block_param, f"Content block type {kind!r} is not supported here.")
    return parts


def _collapse(parts: list[JSON]) -> str | list[JSON]:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def openai_messages(system: Any, messages: Any, *, server_tool_name: Any = None) -> list[JSON]:
    """An Anthropic ``system`` and ``messages`` as OpenAI chat messages.

    ``tool_use`` / ``tool_result`` blocks become tool calls and ``tool``
    messages; ``mcp_tool_use`` / ``mcp_tool_result`` blocks (server-side calls an
    earlier answer carried) too, named with ``server_tool_name(server, tool)``.
    A ``role: "system"`` message inside ``messages`` stays a system message in place.
    A code-mode script run (``server_tool_use`` ``code_execution`` and its
    ``code_execution_tool_result``) becomes the ``run_script`` call of server
    ``plugway`` the model made; the calls the script made (blocks with a
    ``caller``) were never the model's and are left out.
    Thinking blocks ride on the assistant turn they open, under ``reasoning_parts``.
    """
    out: list[JSON] = []
    if system is not None:
        if isinstance(system, str):
            text = system
        elif isinstance(system, list):
            text = "\n\n".join(str(p["text"]) for p in _openai_parts(system, "system") if p["type"] == "text")
        else:
            raise invalid_request("'system' must be a string or an array of text blocks.", param="system")
        if text.strip():
            out.append({"role": "system", "content": text})
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise invalid_request("Each message needs 'role' user, assistant or system.", param=f"{param}.role")
        content = message.get("content")
        if message["role"] == "system":
            # Anthropic's mid-conversation system message: a chat system message, in place.
            if isinstance(content, list):
                content = "\n\n".join(str(p["text"]) for p in _openai_parts(content, f"{param}.content") if p["type"] == "text")
            if not isinstance(content, str):
                raise invalid_request("A system message's 'content' must be a string or text blocks.", param=f"{param}.content")
            out.append({"role": "system", "content": content})
            continue
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise invalid_request("'content' must be a string or an array of blocks.", param=f"{param}.content")
        if message["role"] == "user":
            _user_turn(content, param, out)
        else:
            _assistant_turn(content, param, out, server_tool_name)
    return out


def _tool_result_content(block: JSON, param: str) -> str | list[JSON]:
    content = block.get("content")
    if content is None:
        result: str | list[JSON] = ""
    else:
        result = _collapse(_openai_parts(content, f"{param}.content"))
    if block.get("is_error"):
        text = result if isinstance(result, str) else " ".join(p.get("text", "") for p in result)
        return f"[tool error] {text}"
    return result


def _user_turn(blocks: list[Any], param: str, out: list[JSON]) -> None:
    # tool_result blocks answer the previous assistant turn's calls: their tool messages come first.
    rest: list[Any] = []
    for j, block in enumerate(blocks):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if not isinstance(tool_use_id, str):
                raise invalid_request("A tool_result needs 'tool_use_id'.", param=f"{param}.content[{j}].tool_use_id")
            out.append({"role": "tool", "tool_call_id": tool_use_id, "content": _tool_result_content(block, f"{param}.content[{j}]")})
        else:
            rest.append(block)
    if rest:
        out.append({"role": "user", "content": _collapse(_openai_parts(rest, f"{param}.content"))})


def _assistant_turn(blocks: list[Any], param: str, out: list[JSON], server_tool_name: Any) -> None:
    text: list[str] = []
    calls: list[JSON] = []
    results: list[JSON] = []
    thinking: list[JSON] = []

    def flush() -> None:
        if text or calls:
            turn: JSON = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                turn["tool_calls"] = list(calls)
            if thinking:
                # Signed thinking travels with the turn it opened, verbatim (runtime.reasoning);
                # a block plugway made to carry OpenAI's reasoning item is that item again.
                turn[REASONING_PARTS] = list(thinking)
                thinking.clear()
            out.append(turn)
            out.extend(results)
        text.clear()
        calls.clear()
        results.clear()

    made_by_scripts: set[str] = set()
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        block_param = f"{param}.content[{j}]"
        if kind == "mcp_tool_use" and block.get("caller") and server_tool_name is not None:
            made_by_scripts.add(str(block.get("id")))
            continue
        if kind == "mcp_tool_result" and block.get("tool_use_id") in made_by_scripts:
            continue
        if kind == "server_tool_use" and block.get("name") == "code_execution" and server_tool_name is not None:
            if results:
                flush()
            code = (block.get("input") or {}).get("code") if isinstance(block.get("input"), dict) else None
            arguments = orjson.dumps({"code": code if isinstance(code, str) else ""}).decode()
            calls.append({"id": str(block.get("id") or ""), "type": "function", "function": {"name": server_tool_name("plugway", "run_script"), "arguments": arguments}})
            continue
        if kind == "code_execution_tool_result" and server_tool_name is not None:
            outcome = block.get("content") if isinstance(block.get("content"), dict) else {}
            shown = outcome.get("stdout") if outcome.get("return_code") == 0 else outcome.get("stderr")
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": str(shown or "")})
            continue
        if kind == "text":
            if results:
                flush()
            text.append(str(block.get("text") or ""))
        elif kind in ("tool_use", "mcp_tool_use"):
            if results:
                flush()
            name = block.get("name")
            if not isinstance(name, str) or not isinstance(block.get("id"), str):
                raise invalid_request("A tool_use block needs 'id' and 'name'.", param=block_param)
            if kind == "mcp_tool_use" and server_tool_name is not None:
                name = server_tool_name(str(block.get("server_name") or ""), name)
            calls.append({"id": block["id"], "type": "function", "function": {"name": name, "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind == "mcp_tool_result":
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": _tool_result_content(block, block_param)})
        elif kind in THINKING_BLOCKS:
            if results:
                flush()
            try:
                thinking.append(from_anthropic_block(dict(block)))
            except MalformedCarrier as exc:
                raise invalid_request(f"This thinking block was not made by plugway: {exc}.", param=block_param) from None
        else:
            raise unsupported_parameter(block_param, f"Assistant content block type {kind!r} is not supported here.")
    flush()


def openai_tools(tools: Any) -> list[JSON]:
    """Anthropic client tools as OpenAI function tools; server tools are refused."""
    if not isinstance(tools, list):
        raise invalid_request("'tools' must be an array.", param="tools")
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported_parameter(f"tools[{i}]", f"Tool type {kind!r} is not supported; give client tools (name, input_schema) or MCP servers.")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request("A tool needs a 'name'.", param=f"tools[{i}].name")
        function: JSON = {"name": name, "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def openai_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """An Anthropic ``tool_choice`` as OpenAI's, and ``parallel_tool_calls`` when it disables them."""
    if choice is None:
        return None, None
    kind = choice.get("type") if isinstance(choice, dict) else None
    parallel = False if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise invalid_request("'tool_choice.type' must be auto, any, tool or none.", param="tool_choice")


__all__ = [
    "ANTHROPIC_VERSION",
    "anthropic_error_type",
    "anthropic_stop_reason",
    "anthropic_usage",
    "openai_messages",
    "openai_tool_choice",
    "openai_tools",
    "StreamTranslator",
    "default_max_tokens_for",
    "finish_reason",
    "from_anthropic_response",
    "openai_usage",
    "to_anthropic_request",
    "upstream_error",
]
