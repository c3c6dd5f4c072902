"""The loop's events as an Anthropic Messages answer: stream events, or one ``message``.

Content blocks, in the order things happened: each round's signed ``thinking``
/ ``redacted_thinking`` blocks (from the round's ``reasoning_parts``, streamed
as ``thinking_delta`` and ``signature_delta``; a Responses-native model's
reasoning items carried inside such blocks for a client that asked for
thinking, so that it echoes them back), a ``text`` block per round that
produced text; for a client that used the MCP connector (``mcp_servers`` or
its beta), each server-side tool call as an ``mcp_tool_use`` block
(``server_name`` = plugin id, ``name`` = the tool's own name; streamed as
Anthropic does, empty ``input`` then ``input_json_delta``) and, when it
finishes, an ``mcp_tool_result`` block; then ``tool_use`` blocks when the model
called the client's own tools. Other clients get the content without the
server-side calls (the non-beta SDK reads blocks it does not know as text
without ``text``) and the trace in a ``plugway`` field, as chat completions has
it: on the message, or on the stream's ``message_delta``. A tool's progress
reports go out as SSE comments (``PROGRESS``). Usage is summed over every
round; ``message_start`` can only say 0, so the totals arrive in
``message_delta`` (Anthropic's own cumulative counts).
"""

from __future__ import annotations

import uuid

import orjson

from runtime.gateway import KeepAlive
from runtime.json_types import JSON
from runtime.orchestration.events import (
    Completed,
    Event,
    ModelChunk,
    ModelTurn,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
)
from runtime.providers.anthropic_translate import anthropic_stop_reason, anthropic_usage
from runtime.reasoning import ANTHROPIC, REASONING_PARTS, as_anthropic_blocks, parts_of

Out = list[tuple[str, JSON]]  # (event name, data)
# Not an event: an SSE comment line ``: plugway tool_progress {...}``, as on chat streams
# (Anthropic has no progress event; SSE clients, the anthropic SDK among them, skip comments).
PROGRESS = ""


def _input(arguments: str) -> JSON:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class MessagesEncoder:
    def __init__(self, *, model_id: str, mcp_blocks: bool = True, carry_reasoning: bool = False) -> None:
        # Server-side calls as MCP connector blocks (clients that used the connector), else hidden.
        self.mcp_blocks = mcp_blocks
        # OpenAI reasoning items carried in thinking blocks, for a client that asked for thinking
        # (runtime.reasoning.as_anthropic_blocks); other clients see no thinking they did not ask for.
        self.carry_reasoning = carry_reasoning
        # Rounds whose thinking already went out from their stream's chunks.
        self._thinking_streamed: set[int] = set()
        self.message: JSON = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        self._text_index: int | None = None

    @property
    def content(self) -> list[JSON]:
        return self.message["content"]  # type: ignore[no-any-return]

    def start(self) -> Out:
        return [("message_start", {"type": "message_start", "message": {**self.message, "content": []}})]

    def encode(self, event: Event | KeepAlive) -> Out:
        if isinstance(event, ModelChunk):
            out: Out = []
            for choice in event.chunk.get("choices") or ():
                parts = self._blocks(choice.get("delta") or {})
                if parts:
                    self._thinking_streamed.add(event.round)
                    out += self._close_text() + [item for part in parts for item in self._thinking(part)]
            text = event.text
            return out + (self._text(text) if text else [])
        if isinstance(event, ModelTurn):
            out = []
            if event.round not in self._thinking_streamed and REASONING_PARTS in event.message:
                out = [item for part in self._blocks(event.message) for item in self._thinking(part)]
            content = event.message.get("content")
            out += self._text(content) if self._text_index is None and isinstance(content, str) and content else []
            return out + self._close_text()
        if isinstance(event, KeepAlive):
            return [("ping", {"type": "ping"})]
        if isinstance(event, ToolCallStarted | ToolCallFinished) and not self.mcp_blocks and event.script is None:
            # Code mode's script runs keep their code-execution blocks (shapes every SDK reads).
            return []
        if isinstance(event, ToolCallStarted) and event.script is not None:
            # Code mode's script run, as Anthropic's code execution shows it.
            script_block = {"type": "server_tool_use", "id": event.call_id, "name": "code_execution", "input": {"code": event.script}}
            return self._close_text() + self._whole_block(script_block)
        if isinstance(event, ToolCallFinished) and event.script is not None:
            outcome: JSON = {"type": "code_execution_result", "stdout": event.content if event.ok else (event.output or ""), "stderr": "" if event.ok else event.content, "return_code": 0 if event.ok else 1, "content": []}
            return self._whole_block({"type": "code_execution_tool_result", "tool_use_id": event.call_id, "content": outcome})
        if isinstance(event, ToolCallStarted) and not event.builtin:
            block = {"type": "mcp_tool_use", "id": event.call_id, "name": event.tool_name or event.name, "server_name": event.plugin_id or "", "input": _input(event.arguments)}
            if event.parent_call_id is not None:
                # A call a script made, as Anthropic's programmatic tool calling marks it.
                block["caller"] = {"type": "code_execution_20250825", "tool_id": event.parent_call_id}
            return self._close_text() + self._input_block(block, event.arguments)
        if isinstance(event, ToolCallFinished) and not event.builtin:
            result: JSON = {"type": "mcp_tool_result", "tool_use_id": event.call_id, "is_error": not event.ok, "content": [{"type": "text", "text": event.content}]}
            return self._whole_block(result)
        if isinstance(event, ToolProgress):
            return [(PROGRESS, event.report())]
        if isinstance(event, Completed):
            return self._completed(event)
        return []

    def _blocks(self, message: JSON) -> list[JSON]:
        return as_anthropic_blocks(message) if self.carry_reasoning else parts_of(message, ANTHROPIC)

    def _text(self, text: str) -> Out:
        out: Out = []
        if self._text_index is None:
            self._text_index = len(self.content)
            self.content.append({"type": "text", "text": ""})
            out.append(("content_block_start", {"type": "content_block_start", "index": self._text_index, "content_block": {"type": "text", "text": ""}}))
        self.content[self._text_index]["text"] += text
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self._text_index, "delta": {"type": "text_delta", "text": text}}))
        return out

    def _close_text(self) -> Out:
        if self._text_index is None:
            return []
        index, self._text_index = self._text_index, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _thinking(self, part: JSON) -> Out:
        """A signed thinking block, whole, as Anthropic streams one (its text, then its signature)."""
        index = len(self.content)
        self.content.append(dict(part))
        if part.get("type") != "thinking":
            # redacted_thinking arrives whole in its block start.
            return [
                ("content_block_start", {"type": "content_block_start", "index": index, "content_block": part}),
                ("content_block_stop", {"type": "content_block_stop", "index": index}),
            ]
        deltas = [
            {"type": "thinking_delta", "thinking": str(part.get("thinking") or "")},
            {"type": "signature_delta", "signature": str(part.get("signature") or "")},
        ]
        return [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            *(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    def _input_block(self, block: JSON, arguments: str) -> Out:
        """A block with ``input``, streamed as Anthropic does: empty input at the start, then the JSON."""
        index = len(self.content)
        self.content.append(block)
        partial = orjson.dumps(block.get("input") or {}).decode() if arguments else "{}"
        return [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    def _whole_block(self, block: JSON) -> Out:
        index = len(self.content)
        self.content.append(block)
        return [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    def _completed(self, completed: Completed) -> Out:
        out = self._close_text()
        calls = (completed.message.get("tool_calls") or []) if completed.stopped_by in ("client_tools", "answer") else []
        for call in calls:
            function = call.get("function") or {}
            arguments = function.get("arguments") or "{}"
            index = len(self.content)
            block = {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex}", "name": function.get("name") or "", "input": _input(arguments)}
            self.content.append(block)
            out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}))
            out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        stop_reason = "tool_use" if calls else anthropic_stop_reason(completed.finish_reason)
        usage = anthropic_usage(completed.usage)
        self.message["stop_reason"] = stop_reason
        self.message["usage"] = usage
        delta: JSON = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage}
        if not self.mcp_blocks and completed.trace.get("orchestrated"):
            # Where chat completions puts the trace of the server-side calls it does not show.
            self.message["plugway"] = delta["plugway"] = completed.trace
        out.append(("message_delta", delta))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
