"""A local HTTP server that speaks OpenAI's chat-completions wire format, following a script.

It answers ``POST /v1/chat/completions`` streamed and not: tool calls (in a
stream: a first chunk with index, id, type and name, then argument fragments
of a few characters each, one call after the other, as OpenAI sends them), the usage chunk
with empty ``choices`` when ``stream_options.include_usage`` is set, then
``data: [DONE]``. It validates requests as OpenAI does (tool messages answer
every ``tool_call_id``, function names, ``tool_choice`` needs ``tools``) and
records every request it received.

``POST /v1/embeddings`` answers in OpenAI's exact shape (``data`` of
``embedding`` objects, float lists or base64 float32 as ``encoding_format``
asks, ``usage`` with ``prompt_tokens`` and ``total_tokens``): deterministic
vectors, one word or one token id a token; ``embedding_errors`` scripts
failures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runtime.json_types import JSON
from tests.fakes.threaded import ThreadedServer

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class Reply:
    """One scripted answer. ``tool_calls`` are (name, arguments dict or raw JSON string) pairs."""

    text: str | None = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    status: int = 200
    error_message: str = "The server had an error while processing your request."
    finish_reason: str | None = None
    # Stop the stream after this many content chunks without finishing (a broken upstream).
    cut_after_chunks: int | None = None
    # Extra response headers (e.g. retry-after on a 429).
    headers: dict[str, str] = field(default_factory=dict)
    # Sent as the usage object instead of the one built from the counts above: any values,
    # negative or beyond 64 bits included, as a misbehaving upstream would send them.
    usage: JSON | None = None


def dumps(payload: Any) -> bytes:
    """JSON bytes; integers beyond 64 bits (which orjson refuses) through the standard library."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, separators=(",", ":")).encode()


Responder = Callable[[JSON], Reply]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def validate(body: JSON) -> Response | None:
    if not isinstance(body.get("model"), str):
        return _error(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "[] is too short - 'messages'", param="messages")
    tools = body.get("tools")
    if body.get("tool_choice") is not None and not tools:
        return _error(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice")
    for i, tool in enumerate(tools or []):
        name = (tool.get("function") or {}).get("name", "")
        if not _NAME.match(name):
            return _error(400, f"Invalid 'tools[{i}].function.name': string does not match pattern.", param=f"tools[{i}].function.name")
    pending: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if pending and role != "tool":
            return _error(400, "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'.", param=f"messages.[{i}].role")
        if role == "assistant":
            pending = {call["id"] for call in message.get("tool_calls") or []}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return _error(400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", param=f"messages.[{i}].role")
            pending.discard(call_id)
    if pending:
        return _error(400, "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'.", param="messages")
    return None


class FakeOpenAI:
    """Start with ``start()``; ``base_url`` is what a provider config points at."""

    def __init__(self, *, api_key: str = "sk-test-upstream") -> None:
        self.api_key = api_key
        self.script: deque[Reply] = deque()
        self.responder: Responder | None = None
        self.requests: list[JSON] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._runner: ThreadedServer | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        # Each scripted Reply here answers one embeddings request with its status (an error).
        self.embedding_errors: deque[Reply] = deque()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- script ---------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def reset(self) -> None:
        self.script.clear()
        self.responder = None
        self.requests.clear()
        self.headers.clear()
        self.max_in_flight = 0
        self.embedding_errors.clear()

    def _next(self, body: JSON) -> Reply:
        if self.script:
            return self.script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Reply(status=500, error_message="fake OpenAI: script exhausted")

    # -- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        invalid = validate(body)
        if invalid is not None:
            return invalid
        reply = self._next(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            self.in_flight -= 1
        if reply.status != 200:
            error = _error(reply.status, reply.error_message, type_="server_error" if reply.status >= 500 else "invalid_request_error")
            error.headers.update(reply.headers)
            return error
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        calls = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else orjson.dumps(args).decode()},
            }
            for name, args in reply.tool_calls
        ]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        usage = reply.usage if reply.usage is not None else {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._stream(completion_id, body["model"], reply, calls, finish, usage if include_usage else None),
                media_type="text/event-stream",
            )
        message: JSON = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        return Response(dumps(payload), media_type="application/json")

    async def _stream(self, completion_id: str, model: str, reply: Reply, calls: list[JSON], finish: str, usage: JSON | None):  # type: ignore[no-untyped-def]
        created = int(time.time())

        def chunk(delta: JSON, finish_reason: str | None = None, **extra: Any) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                **extra,
            }
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        sent = 0
        if reply.text:
            for piece in re.findall(r"\S+\s*|\s+", reply.text):
                if reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                yield chunk({"content": piece})
                sent += 1
                if reply.cut_after_chunks is not None and sent >= reply.cut_after_chunks:
                    return
        # Parallel calls come one after the other, as OpenAI sends them: the first chunk of a
        # call carries index, id, type and name with empty arguments, then its fragments.
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]})
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 5):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start : start + 5]}}]})
        yield chunk({}, finish)
        if usage is not None:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": usage,
            }
            yield b"data: " + dumps(payload) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not isinstance(body.get("model"), str):
            return _error(400, "you must provide a model parameter", param="model")
        raw_input = body.get("input")
        if isinstance(raw_input, str) or (isinstance(raw_input, list) and raw_input and all(isinstance(t, int) for t in raw_input)):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and raw_input:
            inputs = raw_input
        else:
            return _error(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", param="input")
        if self.embedding_errors:
            reply = self.embedding_errors.popleft()
            error = _error(reply.status, reply.error_message, type_="server_error" if reply.status >= 500 else "invalid_request_error")
            error.headers.update(reply.headers)
            return error
        dimensions = int(body.get("dimensions") or 16)
        tokens = 0
        data = []
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += len(item) if isinstance(item, list) else max(1, len(text.split()))
            digest = hashlib.shake_128(text.encode()).digest(dimensions)
            vector = [round(byte / 255 - 0.5, 6) for byte in digest]
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        payload = {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(orjson.dumps(payload), media_type="application/json")

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self._handle, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ]

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        app = Starlette(routes=self.routes())
        self._runner = ThreadedServer(app, name="fake OpenAI server")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop(timeout_s=5)


def main() -> None:
    """Run the fake standalone (benchmarks): every request gets a short answer.

    ``--tool NAME`` makes it call that tool once per conversation, answering after the result.
    """
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tool", help="tool name to call when the last message is from the user")
    parser.add_argument("--arguments", default="{}")
    args = parser.parse_args()
    fake = FakeOpenAI()
    fake.port = args.port

    def respond(body: JSON) -> Reply:
        if args.tool and body["messages"][-1]["role"] == "user" and body.get("tools"):
            return Reply(tool_calls=[(args.tool, args.arguments)])
        return Reply(text="The answer is 42.")

    fake.responder = respond
    # Keep memory flat under load: the standalone fake does not record requests.
    fake.requests = _Discard()  # type: ignore[assignment]
    fake.headers = _Discard()  # type: ignore[assignment]
    app = Starlette(routes=fake.routes())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        return None


if __name__ == "__main__":
    main()
