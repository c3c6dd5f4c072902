"""The Anthropic provider: OpenAI-shaped calls served by the Messages API.

All translation lives in :mod:`runtime.providers.anthropic_translate`; this
module only moves bytes and maps transport failures to :class:`UpstreamError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.json_types import JSON
from runtime.providers.anthropic_translate import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    NATIVE_CARRY,
    StreamTranslator,
    betas_for,
    from_anthropic_response,
    ignored_chat_params,
    to_anthropic_request,
    upstream_error,
    with_native_carry,
)
from runtime.providers.base import encode_body, request_headers
from runtime.providers.http import ReadBounds, UpstreamClient, retry_after
from runtime.providers.streaming import iter_sse_json


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def _http_error(status: int, headers: Any, body: bytes) -> UpstreamError:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    return upstream_error(status, payload, retry_after=retry_after(headers))


class AnthropicProvider:
    """A :class:`runtime.providers.base.Provider` for Anthropic's Messages API."""

    kind = "anthropic"

    def __init__(self, config: ProviderConfig, *, default_max_tokens: int = 4096) -> None:
        if not config.base_url:
            raise ValueError(f"provider '{config.id}' needs a base_url")
        self.id = config.id
        self.default_max_tokens = default_max_tokens
        self._url = messages_url(config.base_url)
        headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
            **config.headers,
        }
        if config.api_key:
            headers["x-api-key"] = config.api_key
        # The provider's own betas (configured headers) are merged with each request's, never replaced.
        self._betas = next((v for k, v in headers.items() if k.lower() == ANTHROPIC_BETA), None)
        headers = {k: v for k, v in headers.items() if k.lower() != ANTHROPIC_BETA}
        self._http = UpstreamClient(config.id, headers=headers, bounds=ReadBounds.of(config), max_connections=config.max_connections)

    def _target(self, request: JSON, carry: Any) -> tuple[str, dict[str, str] | None]:
        """The URL (``?beta=true`` when the client called the beta API) and the headers of one call."""
        carry = carry if isinstance(carry, dict) else {}
        client_betas = [str(b) for b in carry.get("betas") or ()]
        headers: dict[str, str] = {}
        betas = betas_for(request, client_betas, self._betas)
        if betas:
            headers[ANTHROPIC_BETA] = betas
        url = f"{self._url}?beta=true" if carry.get("beta_query") else self._url
        return url, headers

    def _headers(self, target: dict[str, str] | None, request_id: str | None) -> dict[str, str] | None:
        extra = request_headers(request_id)
        return {**(extra or {}), **(target or {})} or None

    async def _post(self, request: JSON, request_id: str | None, carry: Any = None) -> JSON:
        url, target = self._target(request, carry)
        reply = await self._http.post(url, encode_body(request), self._headers(target, request_id))
        if reply.status != 200:
            raise _http_error(reply.status, reply.headers, reply.body)
        try:
            message: JSON = orjson.loads(reply.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Anthropic returned a body that is not JSON", status=200) from exc
        return message

    async def _events(self, request: JSON, request_id: str | None, finished: list[bool], carry: Any = None) -> AsyncGenerator[JSON, None]:
        """The stream's events; ``finished[0]`` is set by the caller once it saw the last one."""
        url, target = self._target(request, carry)
        stream = await self._http.open_stream(url, encode_body(request), self._headers(target, request_id))
        try:
            if stream.status != 200:
                raise _http_error(stream.status, stream.headers, await stream.read())
            try:
                async for event in iter_sse_json(stream.lines()):
                    yield event
                    if finished[0]:
                        stream.complete = True
                        return
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("Anthropic sent a stream event that is not JSON") from exc
        finally:
            self._http.close_stream(stream)

    def ignored_chat_params(self, body: JSON) -> list[str]:
        """The chat-completions fields this provider drops (named by the front door)."""
        return ignored_chat_params(body, self.default_max_tokens)

    def _request(self, body: JSON) -> JSON:
        request = to_anthropic_request(body, default_max_tokens=self.default_max_tokens)
        return with_native_carry(request, body)

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        message = await self._post(self._request(body), request_id, body.get(NATIVE_CARRY))
        return from_anthropic_response(message, created=int(time.time()))

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        request = self._request(body)
        request["stream"] = True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = StreamTranslator(
            model=request["model"], created=int(time.time()), include_usage=include_usage
        )
        # The role chunk is held back until the first content arrives, so that an
        # early `error` event (overloaded) still counts as "nothing streamed yet"
        # and stays retryable by open_stream_with_retries.
        held: list[JSON] = []
        started = False
        finished = [False]
        events = self._events(request, request_id, finished, body.get(NATIVE_CARRY))
        try:
            async for event in events:
                chunks = translator.feed(event)
                finished[0] = translator.finished
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
        finally:
            await events.aclose()
        if not translator.finished:
            raise UpstreamError("Anthropic stream ended before message_stop", retryable=True)

    # -- native: the client's own Messages request, for the /v1/messages front door -------------------

    async def messages(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """Send an Anthropic Messages body as it is; the Messages response as it comes.

        The client's betas and ``?beta=true`` ride in :data:`NATIVE_CARRY`, which never goes upstream.
        """
        body.pop("stream", None)
        carry = body.pop(NATIVE_CARRY, None)
        return await self._post(body, request_id, carry)

    async def stream_messages(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        """Stream an Anthropic Messages body's events as they come.

        ``message_start`` is held back until the next event, so that an early
        ``error`` event (overloaded) still counts as nothing streamed and stays
        retryable; ``ping`` events are passed on.
        """
        held: JSON | None = None
        finished = [False]
        carry = body.get(NATIVE_CARRY)
        request = {k: v for k, v in body.items() if k != NATIVE_CARRY}
        events = self._events({**request, "stream": True}, request_id, finished, carry)
        try:
            async for event in events:
                kind = event.get("type")
                if kind == "error":
                    raise upstream_error(None, event)
                if kind == "message_start" and held is None:
                    held = event
                    continue
                if held is not None:
                    yield held
                    held = None
                finished[0] = kind == "message_stop"
                yield event
        finally:
            await events.aclose()
        if not finished[0]:
            raise UpstreamError("Anthropic stream ended before message_stop", retryable=True)

    async def aclose(self) -> None:
        await self._http.aclose()
