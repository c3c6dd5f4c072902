"""Server-sent events and the assembly of streamed chat completions.

OpenAI streams a tool call as a first chunk with ``index``, ``id``, ``type`` and
``function.name`` (empty arguments), then chunks carrying only ``index`` and an
``arguments`` fragment; several calls interleave by ``index``. The accumulator
assembles them by index, never by position or id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from runtime.json_types import JSON
from runtime.reasoning import REASONING_PARTS


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield the ``data`` payload of each event (multi-line data joined), stopping at ``[DONE]``."""
    buffer: list[str] = []
    async for line in lines:
        if line == "":
            if buffer:
                data = "\n".join(buffer)
                buffer.clear()
                if data == "[DONE]":
                    return
                yield data
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        data = "\n".join(buffer)
        if data != "[DONE]":
            yield data


async def iter_sse_json(lines: AsyncIterator[str]) -> AsyncIterator[JSON]:
    async for data in iter_sse_data(lines):
        yield orjson.loads(data)


@dataclass
class _ToolCallParts:
    id: str = ""
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamAccumulator:
    """Builds the complete assistant message of one streamed choice (index 0)."""

    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallParts] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: JSON | None = None
    role: str = "assistant"
    id: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    reasoning_parts: list[JSON] = field(default_factory=list)

    def add(self, chunk: JSON) -> None:
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.system_fingerprint = self.system_fingerprint or chunk.get("system_fingerprint")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            if delta.get(REASONING_PARTS):
                self.reasoning_parts.extend(delta[REASONING_PARTS])
            for call in delta.get("tool_calls") or ():
                parts = self.tool_calls.setdefault(call.get("index", 0), _ToolCallParts())
                if call.get("id"):
                    parts.id = call["id"]
                if call.get("type"):
                    parts.type = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    parts.name += function["name"]
                if function.get("arguments"):
                    parts.arguments.append(function["arguments"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    @property
    def text(self) -> str:
        return "".join(self.content)

    def message(self) -> JSON:
        message: JSON = {"role": "assistant", "content": self.text or None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.reasoning_parts:
            message[REASONING_PARTS] = list(self.reasoning_parts)
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": parts.id,
                    "type": parts.type,
                    "function": {"name": parts.name, "arguments": "".join(parts.arguments)},
                }
                for _, parts in sorted(self.tool_calls.items())
            ]
        return message
