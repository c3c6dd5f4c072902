"""The Anthropic provider: OpenAI-shaped calls served by the Messages API.

All translation lives in :mod:`runtime.providers.anthropic_translate`; this
module only moves bytes and maps transport failures to :class:`UpstreamError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.providers.anthropic_translate import (
    ANTHROPIC_VERSION,
    StreamTranslator,
    from_anthropic_response,
    parse_retry_after,
    to_anthropic_request,
    upstream_error,
)
from runtime.providers.base import encode_body
from runtime.providers.http import pooled_client
from runtime.providers.streaming import iter_sse_json
from runtime.telemetry import current as telemetry

JSON = dict[str, Any]


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def _transport_error(exc: httpx.RequestError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"Anthropic request timed out ({type(exc).__name__})", retryable=True)
    return UpstreamError(f"Anthropic connection failed ({type(exc).__name__})", retryable=True, detail=str(exc))


def _http_error(response: httpx.Response) -> UpstreamError:
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        payload = None
    return upstream_error(
        response.status_code,
        payload,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


class AnthropicProvider:
    """A :class:`runtime.providers.base.Provider` for Anthropic's Messages API."""

    kind = "anthropic"

    def __init__(self, config: ProviderConfig, *, default_max_tokens: int = 4096) -> None:
        if not config.base_url:
            raise ValueError(f"provider '{config.id}' needs a base_url")
        self.id = config.id
        self.default_max_tokens = default_max_tokens
        self._url = messages_url(config.base_url)
        self._headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
            **config.headers,
        }
        if config.api_key:
            self._headers["x-api-key"] = config.api_key
        self._client = pooled_client(timeout_s=config.timeout_s, connect_timeout_s=config.connect_timeout_s, max_connections=config.max_connections)

    def _request_headers(self, request_id: str | None) -> dict[str, str]:
        headers = {**self._headers, "X-Request-Id": request_id} if request_id else self._headers
        return telemetry().trace_headers(headers) or headers

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        request = to_anthropic_request(body, default_max_tokens=self.default_max_tokens)
        content = encode_body(request)
        try:
            response = await self._client.post(self._url, content=content, headers=self._request_headers(request_id))
        except httpx.RequestError as exc:
            raise _transport_error(exc) from exc
        if response.status_code != 200:
            raise _http_error(response)
        try:
            message = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Anthropic returned a body that is not JSON", status=200) from exc
        return from_anthropic_response(message, created=int(time.time()))

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        request = to_anthropic_request(body, default_max_tokens=self.default_max_tokens)
        request["stream"] = True
        content = encode_body(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = StreamTranslator(
            model=request["model"], created=int(time.time()), include_usage=include_usage
        )
        # The role chunk is held back until the first content arrives, so that an
        # early `error` event (overloaded) still counts as "nothing streamed yet"
        # and stays retryable by open_stream_with_retries.
        held: list[JSON] = []
        started = False
        try:
            async with self._client.stream(
                "POST", self._url, content=content, headers=self._request_headers(request_id)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(response)
                async for event in iter_sse_json(response.aiter_lines()):
                    chunks = translator.feed(event)
                    if not chunks:
                        continue
                    if not started:
                        if event.get("type") == "message_start":
                            held.extend(chunks)
                            continue
                        started = True
                        chunks = held + chunks
                    for chunk in chunks:
                        yield chunk
                    if translator.finished:
                        break
        except httpx.RequestError as exc:
            raise _transport_error(exc) from exc
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Anthropic sent a stream event that is not JSON") from exc
        if not translator.finished:
            raise UpstreamError("Anthropic stream ended before message_stop", retryable=True)

    # -- native: the client's own Messages request, for the /v1/messages front door -------------------

    async def messages(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """Send an Anthropic Messages body as it is; the Messages response as it comes."""
        body.pop("stream", None)
        try:
            response = await self._client.post(self._url, content=encode_body(body), headers=self._request_headers(request_id))
        except httpx.RequestError as exc:
            raise _transport_error(exc) from exc
        if response.status_code != 200:
            raise _http_error(response)
        try:
            message: JSON = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Anthropic returned a body that is not JSON", status=200) from exc
        return message

    async def stream_messages(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        """Stream an Anthropic Messages body's events as they come.

        ``message_start`` is held back until the next event, so that an early
        ``error`` event (overloaded) still counts as nothing streamed and stays
        retryable; ``ping`` events are passed on.
        """
        content = encode_body({**body, "stream": True})
        held: JSON | None = None
        finished = False
        try:
            async with self._client.stream("POST", self._url, content=content, headers=self._request_headers(request_id)) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(response)
                async for event in iter_sse_json(response.aiter_lines()):
                    kind = event.get("type")
                    if kind == "error":
                        raise upstream_error(None, event)
                    if kind == "message_start" and held is None:
                        held = event
                        continue
                    if held is not None:
                        yield held
                        held = None
                    yield event
                    if kind == "message_stop":
                        finished = True
                        break
        except httpx.RequestError as exc:
            raise _transport_error(exc) from exc
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Anthropic sent a stream event that is not JSON") from exc
        if not finished:
            raise UpstreamError("Anthropic stream ended before message_stop", retryable=True)

    async def aclose(self) -> None:
        await self._client.aclose()
