"""Turn an MCP ``CallToolResult`` into text a model can read.

``structuredContent`` wins when present (as JSON text; servers also send the
same data as a text block, which would only repeat it). Text blocks are joined.
Images, audio and binary resources cannot reach a chat model as tool output,
so they are summarised rather than dropped silently: the model then knows
something was returned and can say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)


def _decoded_size(b64: str) -> int:
    """Bytes encoded by a base64 string, without decoding it."""
    stripped = b64.rstrip("=")
    return len(stripped) * 3 // 4


def summarise_block(block: Any) -> str:
    """One content block as text; non-text blocks as a bracketed summary."""
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent):
        return f"[image: {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, AudioContent):
        return f"[audio: {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return f"[resource: {resource.uri}]\n{resource.text}"
        if isinstance(resource, BlobResourceContents):
            mime = resource.mime_type or "application/octet-stream"
            return f"[resource: {resource.uri}, {mime}, {_decoded_size(resource.blob)} bytes]"
        return f"[resource: {getattr(resource, 'uri', '?')}]"
    if isinstance(block, ResourceLink):
        described = f": {block.description}" if block.description else ""
        return f"[resource link: {block.name} <{block.uri}>{described}]"
    kind = getattr(block, "type", type(block).__name__)
    return f"[{kind} content]"


def render_content(blocks: Iterable[Any], *, skip_text: bool = False) -> str:
    parts = [
        summarise_block(block)
        for block in blocks
        if not (skip_text and isinstance(block, TextContent))
    ]
    return "\n".join(part for part in parts if part)


def cap_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` (notice included), saying how much was left out."""
    if len(text) <= max_chars:
        return text
    notice = f"\n[truncated: showing {{shown}} of {len(text)} characters]"
    shown = max(0, max_chars - len(notice.format(shown=max_chars)))
    return text[:shown] + notice.format(shown=shown)


def render_result(result: CallToolResult, max_chars: int) -> str:
    """The model-readable text of a tool result, capped at ``max_chars``."""
    if result.structured_content is not None and not result.is_error:
        structured: Any = result.structured_content
        # SDK servers wrap a primitive return value as {"result": value}; the
        # wrapper is protocol plumbing, not something the model should read.
        if isinstance(structured, dict) and list(structured) == ["result"]:
            structured = structured["result"]
        if isinstance(structured, str):
            text = structured
        else:
            text = json.dumps(structured, ensure_ascii=False, separators=(", ", ": "))
        extras = render_content(result.content, skip_text=True)
        if extras:
            text = f"{text}\n{extras}"
    else:
        text = render_content(result.content)
    if not text:
        text = "The tool reported an error without details." if result.is_error else "(no output)"
    return cap_text(text, max_chars)
