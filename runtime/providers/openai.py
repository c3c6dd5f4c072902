"""Any OpenAI-compatible upstream (OpenAI, Azure-style proxies, vLLM, Ollama, ...).

This adapter is the hottest code after the HTTP server itself, so it talks to
aiohttp directly: httpx's request machinery, even over aiohttp's transport,
cost about a fifth of the gateway's CPU per request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.providers.base import encode_body, request_headers
from runtime.providers.streaming import iter_sse_json

JSON = dict[str, Any]

# Statuses that describe a problem with the request itself: passed back to the client.
CLIENT_ERROR_STATUSES = {400, 413, 422}
RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
# An upstream error code worth naming to the client ("insufficient_quota"), never free text.
_SAFE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            return None
    return None


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
        retry_after=_retry_after(headers),
        detail=detail,
    )


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Split a body into lines ourselves: aiohttp's readline refuses lines over 128 KB."""
    pending = b""
    async for data in content.iter_any():
        pending += data
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8")


class OpenAIProvider:
    kind = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        assert config.base_url
        self.id = config.id
        self.config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        self._headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        # sock_read is the time allowed between two reads, as httpx's read timeout.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s, sock_read=config.timeout_s)
        self._max_connections = config.max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that will use it.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout, trust_env=False
            )
        return self._session

    def _transport_error(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, TimeoutError):
            return UpstreamError(f"provider '{self.id}' timed out ({type(exc).__name__})")
        return UpstreamError(f"provider '{self.id}' unreachable ({type(exc).__name__})", detail=str(exc))

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        return await self._post_json(self._url, body, request_id)

    async def _post_json(self, url: str, body: JSON, request_id: str | None) -> JSON:
        payload = encode_body(body)
        try:
            async with self._client().post(url, data=payload, headers=request_headers(request_id)) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._transport_error(exc) from exc
        if status >= 400:
            raise upstream_error_from_response(self.id, status, headers, raw)
        try:
            data: JSON = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"provider '{self.id}' sent invalid JSON") from exc
        return data

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        payload = encode_body(body)
        try:
            response = await self._client().post(self._url, data=payload, headers=request_headers(request_id))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._transport_error(exc) from exc
        finished = False
        try:
            if response.status >= 400:
                raw = await response.read()
                raise upstream_error_from_response(self.id, response.status, response.headers, raw)
            try:
                async for chunk in iter_sse_json(_lines(response.content)):
                    if "error" in chunk and "choices" not in chunk:
                        error = chunk["error"]
                        detail = error.get("message") if isinstance(error, dict) else str(error)
                        raise UpstreamError(f"provider '{self.id}' reported an error mid-stream", retryable=False, detail=str(detail))
                    if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()):
                        finished = True
                    yield chunk
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UpstreamError(
                    f"provider '{self.id}' stream broke ({type(exc).__name__})", retryable=False
                ) from exc
            if not finished:
                # A cut-off stream must not pass for a complete answer.
                raise UpstreamError(f"provider '{self.id}' stream ended before a finish_reason")
        finally:
            if finished:
                response.release()
            else:
                # Abandoned or broken mid-stream: the connection cannot be reused.
                response.close()

    async def embeddings(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """``POST {base_url}/embeddings``: OpenAI's request and response, as they are."""
        data = await self._post_json(self._embeddings_url, body, request_id)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamError(f"provider '{self.id}' sent an embeddings response without 'data'")
        return data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector finish closing its sockets before the loop goes away.
            await asyncio.sleep(0)
