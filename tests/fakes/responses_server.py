"""A local HTTP server that speaks OpenAI's Responses API, following a script.

``POST /v1/responses``, streamed and not, in the shapes of the installed ``openai``
package's ``types/responses``: each turn may start with a ``reasoning`` item (a summary,
and ``encrypted_content`` when ``include`` asks for ``reasoning.encrypted_content``), then
an assistant ``message`` and/or ``function_call`` items (with ``namespace`` when the
scripted call names one). Streams send ``response.created``, ``response.in_progress``,
``response.output_item.added``/``done``, the reasoning summary events, text and
function-call argument deltas, and ``response.completed`` with usage.

It checks what OpenAI checks for a stateless client: a reasoning item sent back must be
one it issued, byte for byte (``encrypted_content`` included; without it, under
``store: false``, the item cannot be found), and each ``function_call_output`` must
answer a ``function_call`` of the same input. Every request is recorded.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runtime.json_types import JSON
from tests.fakes.threaded import ThreadedServer

ENCRYPTED = "reasoning.encrypted_content"


@dataclass
class Call:
    name: str
    arguments: Any = field(default_factory=dict)
    namespace: str | None = None


@dataclass
class Turn:
    """One scripted answer: reasoning (None: no reasoning item), then text and/or calls."""

    text: str | None = None
    calls: list[Call] = field(default_factory=list)
    reasoning: str | None = "Thinking about the request."
    # Other output items, as they are (a client-side tool_search_call, ...), after the reasoning.
    items: list[JSON] = field(default_factory=list)
    input_tokens: int = 21
    output_tokens: int = 9
    reasoning_tokens: int = 5


Responder = Callable[[JSON], Turn]


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def input_items(body: JSON) -> list[JSON]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [item for item in value or () if isinstance(item, dict)]


def reasoning_items(body: JSON) -> list[JSON]:
    """The reasoning items a request sent back, in order."""
    return [item for item in input_items(body) if item.get("type") == "reasoning"]


class FakeResponses:
    """Start with ``start()``; ``base_url`` is what a provider config points at."""

    def __init__(self, *, api_key: str = "sk-test-responses") -> None:
        self.api_key = api_key
        self.script: deque[Turn] = deque()
        self.responder: Responder | None = None
        self.requests: list[JSON] = []
        self.headers: list[dict[str, str]] = []
        # Every reasoning item answered, by id, exactly as it was issued (encrypted_content included).
        self.issued: dict[str, JSON] = {}
        self._answers: list[list[JSON]] = []
        self.port = 0
        self._runner: ThreadedServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *turns: Turn) -> None:
        self.script.extend(turns)

    def reset(self) -> None:
        self.script.clear()
        self.responder = None
        self.requests.clear()
        self.headers.clear()
        self.issued.clear()
        self._answers.clear()

    def issued_in(self, response_index: int) -> list[JSON]:
        """The reasoning items the answer to request ``response_index`` carried (for assertions)."""
        return [item for item in self._answers[response_index] if item.get("type") == "reasoning"]

    # -- checks -----------------------------------------------------------------------

    def _check(self, body: JSON) -> Response | None:
        if not isinstance(body.get("model"), str):
            return _error(400, "Missing required parameter: 'model'.", param="model")
        if body.get("input") is None:
            return _error(400, "Missing required parameter: 'input'.", param="input")
        calls: set[str] = set()
        for i, item in enumerate(input_items(body)):
            kind = item.get("type", "message")
            if kind == "reasoning":
                issued = self.issued.get(str(item.get("id")))
                if issued is None:
                    return _error(404, f"Item with id '{item.get('id')}' not found.", param=f"input[{i}]")
                if "encrypted_content" not in item and body.get("store") is False:
                    return _error(
                        404,
                        f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set to false. "
                        "Try again with `store` set to true, or remove this item from your input.",
                        param=f"input[{i}]",
                    )
                if "encrypted_content" in item and item["encrypted_content"] != issued["encrypted_content"]:
                    return _error(400, f"The encrypted content for item {item.get('id')} could not be verified.", param=f"input[{i}].encrypted_content", code="invalid_encrypted_content")
                if item.get("summary") != issued["summary"]:
                    return _error(400, f"The summary of item {item.get('id')} was changed.", param=f"input[{i}].summary")
            elif kind == "function_call":
                calls.add(str(item.get("call_id")))
            elif kind == "function_call_output" and str(item.get("call_id")) not in calls:
                return _error(400, f"No tool call found for function call output with call_id {item.get('call_id')}.", param=f"input[{i}]")
        for i, tool in enumerate(body.get("tools") or ()):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                return _error(400, f"Missing required parameter: 'tools[{i}].type'.", param=f"tools[{i}].type")
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                return _error(400, f"Missing required parameter: 'tools[{i}].name'.", param=f"tools[{i}].name")
        return None

    def _next(self, body: JSON) -> Turn:
        if self.script:
            return self.script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Turn(text="fake Responses: script exhausted", reasoning=None)

    # -- building the answer ------------------------------------------------------------

    def _items(self, body: JSON, turn: Turn) -> list[JSON]:
        include = body.get("include") or []
        items: list[JSON] = []
        if turn.reasoning is not None:
            item_id = f"rs_{uuid.uuid4().hex}"
            token = base64.b64encode(orjson.dumps({"id": item_id, "seen": len(self.requests), "nonce": uuid.uuid4().hex})).decode()
            reasoning = {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": turn.reasoning}], "encrypted_content": token}
            self.issued[item_id] = dict(reasoning)
            if ENCRYPTED not in include:
                reasoning = {**reasoning, "encrypted_content": None}
            items.append(reasoning)
        items.extend(turn.items)
        if turn.text is not None:
            items.append({
                "id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}],
            })
        for call in turn.calls:
            arguments = call.arguments if isinstance(call.arguments, str) else orjson.dumps(call.arguments).decode()
            item: JSON = {"id": f"fc_{uuid.uuid4().hex}", "type": "function_call", "call_id": f"call_{uuid.uuid4().hex[:24]}", "name": call.name, "arguments": arguments, "status": "completed"}
            if call.namespace is not None:
                item["namespace"] = call.namespace
            items.append(item)
        return items

    @staticmethod
    def _response(body: JSON, turn: Turn, output: list[JSON], status: str) -> JSON:
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": (body.get("reasoning") or {}).get("summary")},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": {
                "input_tokens": turn.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": turn.output_tokens,
                "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
                "total_tokens": turn.input_tokens + turn.output_tokens,
            } if status == "completed" else None,
            "metadata": body.get("metadata") or {},
        }

    # -- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        invalid = self._check(body)
        if invalid is not None:
            self._answers.append([])
            return invalid
        turn = self._next(body)
        output = self._items(body, turn)
        self._answers.append(output)
        if body.get("stream"):
            return StreamingResponse(self._stream(body, turn, output), media_type="text/event-stream")
        return Response(orjson.dumps(self._response(body, turn, output, "completed")), media_type="application/json")

    async def _stream(self, body: JSON, turn: Turn, output: list[JSON]) -> AsyncIterator[bytes]:
        sequence = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal sequence
            payload = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

        started = self._response(body, turn, [], "in_progress")
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        for index, item in enumerate(output):
            kind = item["type"]
            if kind == "reasoning":
                yield event("response.output_item.added", output_index=index, item={**item, "summary": [], "encrypted_content": None})
                for number, summary in enumerate(item["summary"]):
                    common = {"item_id": item["id"], "output_index": index, "summary_index": number}
                    yield event("response.reasoning_summary_part.added", **common, part={"type": "summary_text", "text": ""})
                    for piece in _pieces(summary["text"]):
                        yield event("response.reasoning_summary_text.delta", **common, delta=piece)
                    yield event("response.reasoning_summary_text.done", **common, text=summary["text"])
                    yield event("response.reasoning_summary_part.done", **common, part=summary)
            elif kind == "message":
                text = item["content"][0]["text"]
                yield event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
                common = {"item_id": item["id"], "output_index": index, "content_index": 0}
                yield event("response.content_part.added", **common, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
                for piece in _pieces(text):
                    yield event("response.output_text.delta", **common, delta=piece, logprobs=[])
                yield event("response.output_text.done", **common, text=text, logprobs=[])
                yield event("response.content_part.done", **common, part=item["content"][0])
            elif kind == "function_call":
                yield event("response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"})
                for piece in _pieces(item["arguments"]):
                    yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
                yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index, name=item["name"], arguments=item["arguments"])
            else:
                yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.output_item.done", output_index=index, item=item)
        yield event("response.completed", response=self._response(body, turn, output, "completed"))

    def routes(self) -> list[Route]:
        return [Route("/v1/responses", self._handle, methods=["POST"])]

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeResponses:
        self._runner = ThreadedServer(Starlette(routes=self.routes()), name="fake Responses server")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop(timeout_s=5)


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
