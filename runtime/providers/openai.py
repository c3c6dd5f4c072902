"""Any OpenAI-compatible upstream (OpenAI, Azure-style proxies, vLLM, Ollama, ...)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.providers.http import pooled_client
from runtime.providers.streaming import iter_sse_json

JSON = dict[str, Any]

# Statuses that describe a problem with the request itself: passed back to the client.
CLIENT_ERROR_STATUSES = {400, 413, 422}
RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}


def _retry_after(headers: httpx.Headers) -> float | None:
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


def upstream_error_from_response(provider_id: str, status: int, headers: httpx.Headers, body: bytes) -> UpstreamError:
    message = body.decode("utf-8", errors="replace")[:500]
    param = None
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            param = error.get("param")
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        pass
    return UpstreamError(
        f"provider '{provider_id}' answered {status}: {message}",
        status=status,
        retryable=status in RETRYABLE_STATUSES,
        client_error=status in CLIENT_ERROR_STATUSES,
        param=param if status in CLIENT_ERROR_STATUSES else None,
        retry_after=_retry_after(headers),
    )


class OpenAIProvider:
    kind = "openai"

    def __init__(self, config: ProviderConfig, *, max_connections: int = 200) -> None:
        self.id = config.id
        self.config = config
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        assert config.base_url
        self._client = pooled_client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            max_connections=max_connections,
        )

    async def chat(self, body: JSON) -> JSON:
        try:
            response = await self._client.post("/chat/completions", content=orjson.dumps(body))
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"provider '{self.id}' timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"provider '{self.id}' unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise upstream_error_from_response(self.id, response.status_code, response.headers, response.content)
        try:
            data: JSON = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"provider '{self.id}' sent invalid JSON") from exc
        return data

    async def stream_chat(self, body: JSON) -> AsyncGenerator[JSON, None]:
        request = self._client.build_request("POST", "/chat/completions", content=orjson.dumps(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"provider '{self.id}' timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"provider '{self.id}' unreachable ({type(exc).__name__})") from exc
        try:
            if response.status_code >= 400:
                raw = await response.aread()
                raise upstream_error_from_response(self.id, response.status_code, response.headers, raw)
            finished = False
            try:
                async for chunk in iter_sse_json(response.aiter_lines()):
                    if "error" in chunk and "choices" not in chunk:
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        raise UpstreamError(f"provider '{self.id}' stream error: {message}", retryable=False)
                    if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()):
                        finished = True
                    yield chunk
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"provider '{self.id}' stream broke ({type(exc).__name__})", retryable=False
                ) from exc
            if not finished:
                # A cut-off stream must not pass for a complete answer.
                raise UpstreamError(f"provider '{self.id}' stream ended before a finish_reason")
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
