"""Any OpenAI-compatible upstream (OpenAI, Azure-style proxies, vLLM, Ollama, ...).

The bytes go through :mod:`runtime.providers.http`, the adapters' one HTTP
stack (aiohttp, every read bounded).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.json_types import JSON
from runtime.providers.base import encode_body, request_headers
from runtime.providers.http import ReadBounds, UpstreamClient, retry_after
from runtime.providers.streaming import iter_sse_json
from runtime.reasoning import without_parts

# Statuses that describe a problem with the request itself: passed back to the client.
CLIENT_ERROR_STATUSES = {400, 413, 422}
RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
# An upstream error code worth naming to the client ("insufficient_quota"), never free text.
_SAFE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def upstream_error_from_response(provider_id: str, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    detail = body.decode("utf-8", errors="replace")[:500]
    param = None
    code = None
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            detail = str(error.get("message") or detail)
            param = error.get("param")
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            detail = error
    except orjson.JSONDecodeError:
        pass
    client_error = status in CLIENT_ERROR_STATUSES
    message = f"provider '{provider_id}' answered {status}"
    if client_error:
        # About the client's own request: the client needs the provider's words to fix it.
        message += f": {detail}"
    elif code and _SAFE_CODE.match(code):
        message += f" ({code})"
    return UpstreamError(
        message,
        status=status,
        retryable=status in RETRYABLE_STATUSES,
        client_error=client_error,
        param=param if client_error else None,
        retry_after=retry_after(headers),
        detail=detail,
    )


def _is_image_part(part: Any) -> bool:
    """An image (or sound) part: what a ``role: tool`` message cannot carry on chat completions."""
    return isinstance(part, dict) and part.get("type") in ("image_url", "input_audio")


def images_after_tool_results(messages: list[JSON]) -> list[JSON]:
    """Tool messages carrying images, as chat completions accepts them.

    A ``role: tool`` message's content may only be text there, so a tool
    result's images and sounds (the loop puts them beside its text as
    ``image_url`` and ``input_audio`` parts) move to one ``user`` message right
    after the round's tool messages, introduced by the call they came from. That is what OpenAI's own
    examples and the common gateways do: the model reads the tool's text where
    it belongs and sees the images as the very next thing. (A user message
    between two tool messages would break the round, so it waits for the last.)
    """
    if not any(
        message.get("role") == "tool" and isinstance(message.get("content"), list) and any(map(_is_image_part, message["content"]))
        for message in messages
    ):
        return messages
    out: list[JSON] = []
    pending: list[JSON] = []
    for message in messages:
        if pending and message.get("role") != "tool":
            out.append({"role": "user", "content": pending})
            pending = []
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, list) and any(map(_is_image_part, content)):
            text = "\n".join(str(part.get("text") or "") for part in content if isinstance(part, dict) and part.get("type") == "text")
            out.append({**message, "content": text})
            pending.append({"type": "text", "text": f"Returned by tool call {message.get('tool_call_id') or ''}:"})
            pending.extend(part for part in content if _is_image_part(part))
        else:
            out.append(message)
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def chat_wire_body(body: JSON) -> JSON:
    """The body as chat completions carries it: reasoning state of other protocols stays behind,
    a tool result's images follow the round's tool messages (see :func:`images_after_tool_results`)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        carried = images_after_tool_results(without_parts(messages))
        if carried is not messages:
            return {**body, "messages": carried}
    return body


class OpenAIProvider:
    kind = "openai"
    # The API it is called with, under base_url (the Responses-API adapter overrides it).
    path = "/chat/completions"

    def __init__(self, config: ProviderConfig) -> None:
        assert config.base_url
        self.id = config.id
        self.config = config
        self._url = config.base_url.rstrip("/") + self.path
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._http = UpstreamClient(config.id, headers=headers, bounds=ReadBounds.of(config), max_connections=config.max_connections)

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        return await self._post_json(self._url, chat_wire_body(body), request_id)

    async def _post_json(self, url: str, body: JSON, request_id: str | None) -> JSON:
        reply = await self._http.post(url, encode_body(body), request_headers(request_id))
        if reply.status >= 400:
            raise upstream_error_from_response(self.id, reply.status, reply.headers, reply.body)
        try:
            data: JSON = orjson.loads(reply.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"provider '{self.id}' sent invalid JSON") from exc
        return data

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        stream = await self._http.open_stream(self._url, encode_body(chat_wire_body(body)), request_headers(request_id))
        finished = False
        try:
            if stream.status >= 400:
                raise upstream_error_from_response(self.id, stream.status, stream.headers, await stream.read())
            async for chunk in iter_sse_json(stream.lines()):
                if "error" in chunk and "choices" not in chunk:
                    error = chunk["error"]
                    detail = error.get("message") if isinstance(error, dict) else str(error)
                    raise UpstreamError(f"provider '{self.id}' reported an error mid-stream", retryable=False, detail=str(detail))
                if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()):
                    finished = stream.complete = True
                yield chunk
            if not finished:
                # A cut-off stream must not pass for a complete answer.
                raise UpstreamError(f"provider '{self.id}' stream ended before a finish_reason")
        finally:
            self._http.close_stream(stream)

    async def embeddings(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """``POST {base_url}/embeddings``: OpenAI's request and response, as they are."""
        data = await self._post_json(self._embeddings_url, body, request_id)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamError(f"provider '{self.id}' sent an embeddings response without 'data'")
        return data

    async def aclose(self) -> None:
        await self._http.aclose()
