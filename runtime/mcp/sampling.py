"""MCP sampling in plugway's terms: a server's ``sampling/createMessage`` as OpenAI chat messages.

The server's request becomes a :class:`SamplingRequest` for the tool call's
``ctx.sample`` (the request's own model, limits and budget, billed as
``mcp-sampling``); the answer goes back as a ``CreateMessageResult``. plugway
never offers tools to a sampling request (it does not advertise
``sampling.tools``), so a server cannot recurse into the loop through it.
"""

from __future__ import annotations

from typing import Any

from mcp_types import (
    AudioContent,
    CreateMessageRequestParams,
    CreateMessageResult,
    ImageContent,
    SamplingMessage,
    TextContent,
)

from runtime.plugin_host.tool import SamplingRequest, SamplingResult


class SamplingRefused(ValueError):
    """The server's sampling request cannot be served as asked; the message says why."""


def _openai_message(message: SamplingMessage) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for block in message.content_as_list:
        if isinstance(block, TextContent):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageContent):
            url = f"data:{block.mime_type};base64,{block.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(block, AudioContent):
            parts.append({"type": "text", "text": f"[audio ({block.mime_type}) left out: plugway does not pass audio to models]"})
        else:
            kind = getattr(block, "type", type(block).__name__)
            raise SamplingRefused(f"plugway does not offer tools to sampling requests ({kind} content in a message)")
    if all(part["type"] == "text" for part in parts):
        # Plain text as a string: every provider adapter takes that.
        return {"role": message.role, "content": "\n".join(part["text"] for part in parts)}
    return {"role": message.role, "content": parts}


def sampling_request(params: CreateMessageRequestParams) -> SamplingRequest:
    """The server's request as plugway's :class:`SamplingRequest` (raises :class:`SamplingRefused`)."""
    if params.tools or params.tool_choice is not None:
        raise SamplingRefused("plugway does not offer tools to sampling requests")
    if not params.messages:
        raise SamplingRefused("the sampling request has no messages")
    hints = params.model_preferences.hints if params.model_preferences is not None else None
    hint = next((h.name for h in hints or () if h.name), None)
    return SamplingRequest(
        messages=[_openai_message(message) for message in params.messages],
        max_tokens=params.max_tokens,
        system=params.system_prompt,
        temperature=params.temperature,
        stop=list(params.stop_sequences) if params.stop_sequences else None,
        model_hint=hint,
    )


def sampling_result(result: SamplingResult) -> CreateMessageResult:
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=result.text),
        model=result.model,
        stop_reason=result.stop_reason,
    )
