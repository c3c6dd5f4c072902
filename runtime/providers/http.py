"""The one outbound HTTP stack of the provider adapters that call a server (openai, anthropic).

aiohttp's client, used directly: on this project's machine a bare proxy does
about 2,800 requests/s with it, 1,800 with httpx over aiohttp's transport and
540 with httpx's own (REFERENCE.md). Each provider gets one pooled session,
created on first use inside the event loop that uses it.

Every read from an upstream is bounded, whatever the upstream does:

- a non-streamed call (connecting, sending, the headers and the whole body)
  ends within ``timeout_s``, and its body is at most ``max_response_bytes``;
- a stream's headers, and every gap between two reads, are bounded by
  ``timeout_s``; the whole stream by ``max_stream_s``; one server-sent event
  (its lines up to the blank line that ends it) by ``max_event_bytes``.

A bound that is hit ends the call with an :class:`UpstreamError` and closes the
connection, so the gateway stops reading at once. Lines are split as the bytes
arrive (linear, whatever the line length), not with aiohttp's ``readline``,
which refuses lines over 128 KB.

``retry_after`` is the one reader of an upstream's ``retry-after-ms``
(milliseconds) and ``retry-after`` (seconds or an HTTP date) headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from runtime.errors import UpstreamError


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds an upstream asks us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ReadBounds:
    """How long and how much the gateway reads from one provider (see the module docstring)."""

    timeout_s: float
    connect_timeout_s: float
    max_stream_s: float
    max_response_bytes: int
    max_event_bytes: int

    @classmethod
    def of(cls, config: Any) -> ReadBounds:
        """The bounds a provider's configuration sets."""
        return cls(
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            max_stream_s=config.max_stream_s,
            max_response_bytes=config.max_response_bytes,
            max_event_bytes=config.max_event_bytes,
        )


@dataclass(slots=True)
class Reply:
    """A non-streamed answer, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream:
    """An open streamed response: its status and headers, then :meth:`lines`."""

    __slots__ = ("_client", "complete", "response")

    def __init__(self, client: UpstreamClient, response: aiohttp.ClientResponse) -> None:
        self._client = client
        self.response = response
        # Set once the upstream said its last word: the connection may then go back to the pool.
        self.complete = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def read(self) -> bytes:
        """The rest of the body (an error answer), within the size bound."""
        return await self._client.read_bounded(self.response)

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines, without their line ends, each event within ``max_event_bytes``."""
        client = self._client
        limit = client.bounds.max_event_bytes
        pending = bytearray()
        event_bytes = 0  # bytes since the blank line that ended the last event
        try:
            async for data in self.response.content.iter_any():
                start = 0
                while (newline := data.find(b"\n", start)) >= 0:
                    if pending:
                        pending += data[start:newline]
                        line = bytes(pending)
                        pending.clear()
                    else:
                        line = data[start:newline]
                    start = newline + 1
                    event_bytes = 0 if line in (b"", b"\r") else event_bytes + len(line) + 1
                    if event_bytes > limit:
                        raise client.event_too_large()
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                if start < len(data):
                    pending += data[start:]
                    if event_bytes + len(pending) > limit:
                        raise client.event_too_large()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise client.stream_error(exc) from exc
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")


class UpstreamClient:
    """One provider's pooled aiohttp session, every read bounded by :class:`ReadBounds`."""

    def __init__(self, provider_id: str, *, headers: Mapping[str, str], bounds: ReadBounds, max_connections: int) -> None:
        self.provider_id = provider_id
        self.bounds = bounds
        self._headers = dict(headers)
        self._max_connections = max_connections
        # A non-streamed call is bounded as a whole; a stream by its own deadline, and by timeout_s between reads.
        self._call_timeout = aiohttp.ClientTimeout(total=bounds.timeout_s, sock_connect=bounds.connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=bounds.max_stream_s, sock_connect=bounds.connect_timeout_s, sock_read=bounds.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, trust_env=False)
        return self._session

    # -- errors -------------------------------------------------------------------------

    def transport_error(self, exc: BaseException) -> UpstreamError:
        """A call that never got an answer: unreachable, or past its deadline."""
        if isinstance(exc, TimeoutError):
            return UpstreamError(f"provider '{self.provider_id}' timed out ({type(exc).__name__})")
        return UpstreamError(f"provider '{self.provider_id}' unreachable ({type(exc).__name__})", detail=str(exc))

    def stream_error(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, TimeoutError):
            return UpstreamError(f"provider '{self.provider_id}' stream timed out ({type(exc).__name__})")
        return UpstreamError(f"provider '{self.provider_id}' stream broke ({type(exc).__name__})", detail=str(exc))

    def event_too_large(self) -> UpstreamError:
        return UpstreamError(
            f"provider '{self.provider_id}' sent a stream event longer than {self.bounds.max_event_bytes} bytes", retryable=False
        )

    def body_too_large(self) -> UpstreamError:
        return UpstreamError(
            f"provider '{self.provider_id}' sent a body larger than {self.bounds.max_response_bytes} bytes", retryable=False
        )

    # -- calls --------------------------------------------------------------------------

    async def read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.bounds.max_response_bytes
        length = response.content_length
        try:
            if length is not None:
                if length > limit:
                    raise self.body_too_large()
                return await response.read()
            chunks: list[bytes] = []
            size = 0
            async for data in response.content.iter_any():
                size += len(data)
                if size > limit:
                    raise self.body_too_large()
                chunks.append(data)
            return b"".join(chunks)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc

    async def post(self, url: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        """One non-streamed call, read whole within its bounds."""
        try:
            async with self.session().post(url, data=payload, headers=headers, timeout=self._call_timeout) as response:
                try:
                    body = await self.read_bounded(response)
                except UpstreamError:
                    response.close()
                    raise
                return Reply(response.status, response.headers, body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc

    async def open_stream(self, url: str, payload: bytes, headers: Mapping[str, str] | None = None) -> UpstreamStream:
        """Start a streamed call; close it with :meth:`close_stream` (a ``finally``)."""
        try:
            response = await self.session().post(url, data=payload, headers=headers, timeout=self._stream_timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc
        return UpstreamStream(self, response)

    @staticmethod
    def close_stream(stream: UpstreamStream) -> None:
        if stream.complete:
            stream.response.release()
        else:
            # Abandoned, cut off or past a bound: the connection cannot be reused, and we stop reading now.
            stream.response.close()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector finish closing its sockets before the loop goes away.
            await asyncio.sleep(0)
