"""A local stand-in for Anthropic's Messages API, for tests.

It speaks the wire format as Anthropic does: it checks headers and bodies the
way the real API does (roles alternating, ``max_tokens``, tool_result ids that
answer the previous assistant turn's tool_use ids, ...) and answers invalid
requests with ``400 invalid_request_error`` in Anthropic's error shape; it
streams real ``event:``/``data:`` SSE with Anthropic's event sequence.

What it answers follows a script::

    with FakeAnthropic() as server:          # or the `fake_anthropic` fixture
        server.script([
            Fail(529, retry_after=0.1),
            Reply(tool_use=[("clock__now", {"tz": "UTC"})]),
            Reply(text="It is noon."),
        ])
        ...                                    # point a provider at server.base_url
        assert server.requests[1].body["messages"][-1]["role"] == "user"

Once the script is exhausted it answers ``Reply(text="echo: <last user text>")``.
The server runs uvicorn in a background thread, so it outlives event loops and
can be shared across tests (call ``reset()`` between them).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runtime.json_types import JSON
from tests.fakes.threaded import ThreadedServer

DEFAULT_API_KEY = "sk-ant-test-key"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "authentication_error": "invalid x-api-key",
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOP_LEVEL_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
    }
)
# Betas under which ``role: "system"`` may appear inside ``messages`` (Claude Code 2.1.332 sends
# such messages with ``per-turn-control-2026-07-01``; earlier ones named ``mid-conversation-system-*``).
SYSTEM_MESSAGE_BETAS = ("mid-conversation-system", "per-turn-control")
# What the real API says when a tool round with thinking on lost the turn's thinking.
THINKING_FIRST = (
    "Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, a final "
    "`assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and "
    "`tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this "
    "requirement, disable `thinking`."
)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# ---------------------------------------------------------------------------
# script steps
# ---------------------------------------------------------------------------


@dataclass
class Reply:
    """A successful answer: optional thinking, text, then tool_use blocks."""

    text: str | None = None
    tool_use: Sequence[tuple[str, JSON]] = ()
    thinking: str | None = None  # a signed thinking block first
    redacted_thinking: bool = False  # then a redacted_thinking block (opaque data)
    stop_reason: str | None = None  # default: "tool_use" with tools, else "end_turn"
    input_tokens: int | None = None  # default: derived from the request size
    output_tokens: int | None = None  # default: derived from the reply size
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    delay_s: float = 0.0  # before the response headers
    event_delay_s: float = 0.0  # between stream events
    # Sent as the usage (message, message_start and message_delta) instead of the counts
    # above: any values, negative or beyond 64 bits included, as a misbehaving upstream would.
    usage: JSON | None = None


@dataclass
class Fail:
    """An HTTP error in Anthropic's error shape."""

    status: int
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None


@dataclass
class Slow:
    """Wait ``seconds`` before answering (headers included), then answer ``then``."""

    seconds: float
    then: Reply | Fail | None = None


@dataclass
class StreamFail:
    """For a stream: start normally, send ``after_text``, then an ``error`` event.

    For a non-streamed request it answers ``Fail(529)``-like instead.
    """

    after_text: str = ""
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass
class Hangup:
    """Close the stream after ``after_text`` without ``message_stop`` (a dropped connection)."""

    after_text: str = ""


Step = Reply | Fail | Slow | StreamFail | Hangup


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)
    query: str = ""  # the URL's query string (``beta=true`` from the beta SDK)
    status: int = 0  # what the fake answered


class InvalidRequest(Exception):
    pass


# ---------------------------------------------------------------------------
# validation, as the real API does it
# ---------------------------------------------------------------------------


def last_tool_result(body: JSON) -> str | None:
    """The text of the tool result a Messages request's last user turn carries, if any (for
    scripted models: answer from the result once it is there)."""
    last = body["messages"][-1]
    for block in last["content"] if isinstance(last["content"], list) else ():
        if block.get("type") == "tool_result":
            content = block.get("content")
            return content if isinstance(content, str) else " ".join(str(part.get("text") or "") for part in content or ())
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidRequest(message)


def _validate_block(block: Any, where: str, role: str) -> None:
    _require(isinstance(block, dict), f"{where}: Input should be an object")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        _require(isinstance(text, str), f"{where}.text: Field required")
        _require(
            bool(text.strip()), f"{where}: text content blocks must contain non-whitespace text"
        )
    elif kind == "image":
        _require(role == "user", f"{where}: image blocks are only allowed in user messages")
        source = block.get("source") or {}
        if source.get("type") == "base64":
            _require(
                source.get("media_type") in _IMAGE_TYPES,
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
            )
            _require(
                isinstance(source.get("data"), str) and bool(source["data"]),
                f"{where}.source.data: Field required",
            )
        elif source.get("type") == "url":
            _require(
                str(source.get("url", "")).startswith(("http://", "https://")),
                f"{where}.source.url: invalid url",
            )
        else:
            raise InvalidRequest(
                f"{where}.source: Input tag '{source.get('type')}' does not match any of the expected tags"
            )
    elif kind == "document":
        _require(role == "user", f"{where}: document blocks are only allowed in user messages")
    elif kind == "tool_use":
        _require(
            role == "assistant", f"{where}: tool_use blocks are only allowed in assistant messages"
        )
        _require(
            isinstance(block.get("id"), str) and bool(_TOOL_ID.match(block["id"])),
            f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
        )
        _require(
            isinstance(block.get("name"), str) and bool(block["name"]),
            f"{where}.name: Field required",
        )
        _require(
            isinstance(block.get("input"), dict),
            f"{where}.input: Input should be a valid dictionary",
        )
    elif kind == "tool_result":
        _require(role == "user", f"{where}: tool_result blocks are only allowed in user messages")
        _require(isinstance(block.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                _validate_block(inner, f"{where}.content.{k}", "user")
        else:
            _require(
                content is None or isinstance(content, str),
                f"{where}.content: Input should be a valid string or list",
            )
    elif kind in ("thinking", "redacted_thinking"):
        _require(
            role == "assistant", f"{where}: thinking blocks are only allowed in assistant messages"
        )
    elif kind == "tool_reference" and where.count(".content.") == 2:
        # A tool search result naming a deferred tool (the advanced-tool-use beta): it loads that tool.
        _require(isinstance(block.get("tool_name"), str) and bool(block["tool_name"]), f"{where}.tool_name: Field required")
    else:
        raise InvalidRequest(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
        )


def validate_messages_request(body: Any, betas: Sequence[str] = ()) -> None:
    """Raise :class:`InvalidRequest` with Anthropic's wording where the real API would.

    ``betas``: the request's ``anthropic-beta`` values; ``mid-conversation-system-*``
    allows ``role: "system"`` messages inside ``messages``.
    """
    system_role = any(beta.startswith(SYSTEM_MESSAGE_BETAS) for beta in betas)
    _require(isinstance(body, dict), "Input should be an object")
    for key in body:
        _require(key in _TOP_LEVEL_KEYS, f"{key}: Extra inputs are not permitted")
    _require(isinstance(body.get("model"), str) and bool(body["model"]), "model: Field required")
    max_tokens = body.get("max_tokens")
    _require("max_tokens" in body, "max_tokens: Field required")
    _require(
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1,
        "max_tokens: Input should be greater than or equal to 1",
    )
    for key, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        if key in body:
            value = body[key]
            _require(
                isinstance(value, int | float) and low <= value <= high,
                f"{key}: Input should be less than or equal to {high}",
            )
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            for i, block in enumerate(system):
                _require(
                    isinstance(block, dict) and block.get("type") == "text",
                    f"system.{i}: Input should be a text block",
                )
        else:
            _require(isinstance(system, str), "system: Input should be a valid string or list")
    stops = body.get("stop_sequences")
    if stops is not None:
        _require(
            isinstance(stops, list) and all(isinstance(s, str) for s in stops),
            "stop_sequences: Input should be a valid list of strings",
        )
    metadata = body.get("metadata")
    if metadata is not None:
        _require(
            isinstance(metadata, dict) and set(metadata) <= {"user_id"},
            "metadata: Extra inputs are not permitted",
        )

    tool_names: set[str] = set()
    tools = body.get("tools")
    if tools is not None:
        _require(isinstance(tools, list), "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            _require(isinstance(tool, dict), f"tools.{i}: Input should be an object")
            name = tool.get("name")
            _require(
                isinstance(name, str) and bool(_TOOL_NAME.match(name)),
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'",
            )
            schema = tool.get("input_schema")
            _require(
                isinstance(schema, dict) and schema.get("type") == "object",
                f"tools.{i}.custom.input_schema.type: Input should be 'object'",
            )
            for key in tool:
                _require(
                    key
                    in ("name", "description", "input_schema", "cache_control", "type", "strict", "defer_loading", "input_examples", "eager_input_streaming"),
                    f"tools.{i}.custom.{key}: Extra inputs are not permitted",
                )
            _require(name not in tool_names, "tools: Tool names must be unique.")
            tool_names.add(name)
    choice = body.get("tool_choice")
    if choice is not None:
        _require(
            isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"),
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )
        for key in choice:
            _require(
                key in ("type", "name", "disable_parallel_tool_use"),
                f"tool_choice.{choice['type']}.{key}: Extra inputs are not permitted",
            )
        if choice["type"] == "tool":
            _require(
                choice.get("name") in tool_names,
                f"tool_choice: Tool '{choice.get('name')}' not found in tools",
            )
        _require(
            tools is not None,
            "tool_choice: tool_choice may only be specified while providing tools.",
        )

    messages = body.get("messages")
    _require(isinstance(messages, list), "messages: Field required")
    _require(len(messages) > 0, "messages: at least one message is required")
    uses_tools = False
    previous_role: str | None = None
    pending_tool_use_ids: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        _require(isinstance(message, dict), f"{where}: Input should be an object")
        role = message.get("role")
        if role == "system" and system_role:
            _require(isinstance(message.get("content"), str | list), f"{where}.content: Field required")
            continue
        _require(
            role in ("user", "assistant"), f"{where}.role: Input should be 'user' or 'assistant'"
        )
        _require(
            role != previous_role,
            f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row',
        )
        content = message.get("content")
        is_last = i == len(messages) - 1
        if isinstance(content, str):
            _require(
                bool(content.strip()) or (is_last and role == "assistant"),
                f"{where}: all messages must have non-empty content except for the optional final assistant message",
            )
            blocks: list[Any] = [{"type": "text", "text": content}] if content.strip() else []
        else:
            _require(
                isinstance(content, list),
                f"{where}.content: Input should be a valid string or list",
            )
            _require(
                bool(content) or (is_last and role == "assistant"),
                f"{where}: all messages must have non-empty content except for the optional final assistant message",
            )
            blocks = content
        for k, block in enumerate(blocks):
            _validate_block(block, f"{where}.content.{k}", role)

        if role == "user":
            results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
            uses_tools = uses_tools or bool(results)
            for k, block in enumerate(blocks):
                if block.get("type") == "tool_result":
                    _require(
                        block["tool_use_id"] in pending_tool_use_ids,
                        f"{where}.content.{k}: unexpected `tool_use_id` found in `tool_result` blocks: {block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                    )
            if pending_tool_use_ids:
                missing = [tid for tid in pending_tool_use_ids if tid not in results]
                _require(
                    not missing,
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                )
                first_other = next(
                    (k for k, b in enumerate(blocks) if b.get("type") != "tool_result"), len(blocks)
                )
                _require(
                    all(b.get("type") != "tool_result" for b in blocks[first_other:]),
                    f"{where}: tool_result blocks must come first in the user message that answers tool_use blocks",
                )
            pending_tool_use_ids = []
        else:
            pending_tool_use_ids = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            uses_tools = uses_tools or bool(pending_tool_use_ids)
        previous_role = role
    if pending_tool_use_ids and messages[-1].get("role") == "assistant":
        # A trailing tool_use turn is a prefill Anthropic cannot continue from.
        raise InvalidRequest(
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(pending_tool_use_ids)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
        )
    if uses_tools:
        _require(
            tools is not None and len(tools) > 0,
            "Requests which include `tool_use` or `tool_result` blocks must define tools.",
        )


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": _new_id("req_"),
        }
    )


def _dumps(payload: Any) -> bytes:
    """JSON bytes; integers beyond 64 bits (which orjson refuses) through the standard library."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, separators=(",", ":")).encode()


def _sse(event: JSON) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + _dumps(event) + b"\n\n"


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _last_user_text(body: JSON) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return " ".join(texts)
    return ""


class FakeAnthropic:
    """The fake Messages API. ``base_url`` is what a provider's ``base_url`` should be."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        # Every thinking block this server signed (signature -> its text) and redacted data it issued:
        # a block sent back altered, or never issued, is refused as the real API refuses it.
        self.signatures: dict[str, str] = {}
        self.redacted: set[str] = set()
        # Replaces the script for dynamic tests: called with the request body.
        self.responder: Callable[[JSON], Step] | None = None
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._runner: ThreadedServer | None = None
        self.port = 0
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    # -- control ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, steps: Iterable[Step]) -> None:
        """Replace the queue of answers; each request consumes one step."""
        with self._lock:
            self._steps = deque(steps)

    def reset(self) -> None:
        with self._lock:
            self._steps.clear()
            self.requests.clear()
            self.responder = None
            self.signatures.clear()
            self.redacted.clear()

    @property
    def remaining_steps(self) -> int:
        return len(self._steps)

    def start(self) -> FakeAnthropic:
        self._runner = ThreadedServer(self.app, name="fake Anthropic server", graceful_shutdown_s=0.25)
        self.port = self._runner.start(timeout_s=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop(timeout_s=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------

    def _next_step(self, body: JSON) -> Step:
        with self._lock:
            if self._steps:
                return self._steps.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Reply(text=f"echo: {_last_user_text(body)}")

    def _error(
        self,
        status: int,
        message: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> Response:
        error_type = error_type or _ERROR_TYPES.get(status, "api_error")
        headers = {"request-id": _new_id("req_")}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return Response(
            _error_body(error_type, message or _ERROR_MESSAGES.get(error_type, error_type)),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )

    async def _messages(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body, query=request.url.query)
        self.requests.append(recorded)
        response = await self._answer(request, body)
        recorded.status = response.status_code
        return response

    async def _answer(self, request: Request, body: Any) -> Response:
        bearer = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (
            bearer[7:] if bearer.startswith("Bearer ") else ""
        )
        if not key:
            return self._error(401, "x-api-key header is required")
        if key != self.api_key:
            return self._error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        if body is None:
            return self._error(400, "There was an error parsing the body of your request")
        betas = [b.strip() for b in request.headers.get("anthropic-beta", "").split(",") if b.strip()]
        try:
            validate_messages_request(body, betas)
            self._check_thinking(body)
        except InvalidRequest as exc:
            return self._error(400, str(exc))

        step = self._next_step(body)
        if isinstance(step, Slow):
            await asyncio.sleep(step.seconds)
            step = step.then or Reply(text=f"echo: {_last_user_text(body)}")
        if isinstance(step, Fail):
            return self._error(step.status, step.message, step.error_type, step.retry_after)
        streaming = bool(body.get("stream"))
        if isinstance(step, StreamFail | Hangup) and not streaming:
            return self._error(529)
        if isinstance(step, Reply) and step.delay_s:
            await asyncio.sleep(step.delay_s)
        headers = {"request-id": _new_id("req_"), "anthropic-organization-id": "org-fake"}
        if streaming:
            return StreamingResponse(
                self._stream(body, step),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        assert isinstance(step, Reply)
        return Response(
            _dumps(self._message(body, step)), media_type="application/json", headers=headers
        )

    def _check_thinking(self, body: JSON) -> None:
        """Thinking blocks sent back must be ones this server signed, unchanged; with thinking on,
        the final assistant turn of a tool round must start with its thinking."""
        messages = body["messages"]
        for i, message in enumerate(messages):
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for k, block in enumerate(content):
                if block.get("type") == "thinking":
                    _require(
                        self.signatures.get(str(block.get("signature"))) == block.get("thinking"),
                        f"messages.{i}.content.{k}: Invalid `signature` in `thinking` block",
                    )
                elif block.get("type") == "redacted_thinking":
                    _require(block.get("data") in self.redacted, f"messages.{i}.content.{k}: Invalid `data` in `redacted_thinking` block")
        thinking = body.get("thinking")
        if not (isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")):
            return
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or not isinstance(messages[last].get("content"), list):
            return
        content = messages[last]["content"]
        if any(block.get("type") == "tool_use" for block in content):
            first = content[0].get("type") if content else "nothing"
            _require(first in ("thinking", "redacted_thinking"), f"messages.{last}.content.0.type: " + THINKING_FIRST.format(found=first))

    # -- answers ----------------------------------------------------------

    @staticmethod
    def _input_tokens(body: JSON, reply: Reply) -> int:
        if reply.input_tokens is not None:
            return reply.input_tokens
        size = len(orjson.dumps([body.get("system"), body["messages"], body.get("tools")]))
        return size // 4 + 1

    @staticmethod
    def _output_tokens(reply: Reply) -> int:
        if reply.output_tokens is not None:
            return reply.output_tokens
        size = len(reply.text or "") + len(orjson.dumps(list(reply.tool_use)))
        return size // 4 + 1

    def _blocks(self, reply: Reply) -> list[JSON]:
        blocks: list[JSON] = []
        if reply.thinking:
            signature = "EqQBCkgIARABGAIiQL" + uuid.uuid4().hex
            self.signatures[signature] = reply.thinking
            blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": signature})
        if reply.redacted_thinking:
            data = "EmwKAhgBEgy" + uuid.uuid4().hex
            self.redacted.add(data)
            blocks.append({"type": "redacted_thinking", "data": data})
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        for name, arguments in reply.tool_use:
            blocks.append(
                {"type": "tool_use", "id": _new_id("toolu_01"), "name": name, "input": arguments}
            )
        return blocks

    @staticmethod
    def _stop_reason(reply: Reply) -> str:
        return reply.stop_reason or ("tool_use" if reply.tool_use else "end_turn")

    def _usage(self, body: JSON, reply: Reply, output_tokens: int) -> JSON:
        if reply.usage is not None:
            return reply.usage
        return {
            "input_tokens": self._input_tokens(body, reply),
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def _message(self, body: JSON, reply: Reply) -> JSON:
        return {
            "id": _new_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": self._blocks(reply),
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": None,
            "usage": self._usage(body, reply, self._output_tokens(reply)),
        }

    async def _stream(self, body: JSON, step: Step) -> AsyncIterator[bytes]:
        reply = step if isinstance(step, Reply) else Reply()
        delay = reply.event_delay_s
        start = {
            "type": "message_start",
            "message": {
                "id": _new_id("msg_01"),
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._usage(body, reply, 1),
            },
        }
        yield _sse(start)
        if isinstance(step, StreamFail | Hangup):
            if step.after_text:
                yield _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                yield _sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": step.after_text},
                    }
                )
            if isinstance(step, StreamFail):
                yield _sse(
                    {"type": "error", "error": {"type": step.error_type, "message": step.message}}
                )
            return
        for index, block in enumerate(self._blocks(reply)):
            kind = block["type"]
            if kind == "tool_use":
                opening = {**block, "input": {}}
            elif kind == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
            elif kind == "redacted_thinking":
                opening = block  # arrives whole, with no deltas
            else:
                opening = {"type": kind, kind: ""}
            yield _sse({"type": "content_block_start", "index": index, "content_block": opening})
            if index == 0:
                yield _sse({"type": "ping"})
            deltas: list[JSON] = []
            if kind == "text":
                deltas = [
                    {"type": "text_delta", "text": piece}
                    for piece in re.findall(r"\S+\s*|\s+", block["text"])
                ]
            elif kind == "thinking":
                half = len(block["thinking"]) // 2
                deltas = [
                    {"type": "thinking_delta", "thinking": block["thinking"][:half]},
                    {"type": "thinking_delta", "thinking": block["thinking"][half:]},
                    {"type": "signature_delta", "signature": block["signature"]},
                ]
            elif kind == "redacted_thinking":
                deltas = []
            else:
                # Anthropic opens with an empty fragment, then splits the JSON arbitrarily.
                arguments = orjson.dumps(block["input"]).decode()
                pieces = _split(arguments, 3) if block["input"] else []
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
            for delta in deltas:
                if delay:
                    await asyncio.sleep(delay)
                yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
            yield _sse({"type": "content_block_stop", "index": index})
        yield _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                "usage": reply.usage if reply.usage is not None else {"output_tokens": self._output_tokens(reply)},
            }
        )
        yield _sse({"type": "message_stop"})


def closed_port_url() -> str:
    """A base URL on which nothing listens: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    """One fake per test module (import this and ``fake_anthropic`` into the module)."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_anthropic(fake_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The module's fake, with an empty script and no recorded requests."""
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()
