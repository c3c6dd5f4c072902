"""HTTP: GET a URL and return readable text, refusing internal addresses.

The SSRF guard (:mod:`plugins.ssrf_guard`) resolves the host and refuses any
address that is not globally routable (unless the organisation's plugin config
sets ``allow_private: true``), then connects to the vetted address itself so a
DNS answer cannot change between the check and the connection. Every redirect
hop is checked again. Time is capped (``timeout_s``), and so is the body, by
its *decoded* size (``max_bytes``): content codings are undone in bounded
pieces by :mod:`plugins.content_decoding`, at most two stacked. HTML becomes
text in an isolated worker process (:mod:`runtime.plugin_host.isolation`) with
a linear-time parser (:mod:`plugins.html_text`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

from plugins.content_decoding import ACCEPT_ENCODING, BoundedDecoder, content_codings
from plugins.html_text import html_to_text
from plugins.ssrf_guard import ascii_hostname, vetted_address
from runtime import ToolContext, ToolError, hookimpl
from runtime.plugin_host.isolation import run_isolated

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_TIMEOUT_S = 10.0
# The body is held in memory and parsed: even an administrator's setting stays bounded.
MAX_MAX_BYTES = 100_000_000
MAX_TIMEOUT_S = 600.0
MAX_REDIRECTS = 5
USER_AGENT = "plugway-http/0.1 (+https://github.com/plugway)"
_SETTINGS = ("allow_private", "max_bytes", "timeout_s")


@dataclass(frozen=True)
class FetchSettings:
    allow_private: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S


def _config_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    unknown = set(config) - set(_SETTINGS)
    if unknown:
        problems.append(f"unknown settings: {', '.join(sorted(unknown))}")
    if "allow_private" in config and not isinstance(config["allow_private"], bool):
        problems.append("allow_private must be true or false")
    max_bytes = config.get("max_bytes", DEFAULT_MAX_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 < max_bytes <= MAX_MAX_BYTES:
        problems.append(f"max_bytes must be a whole number of bytes from 1 to {MAX_MAX_BYTES:_}")
    timeout_s = config.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        problems.append(f"timeout_s must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    return problems


def fetch_settings(config: Mapping[str, Any]) -> FetchSettings:
    """The plugin's settings from an organisation's config (validated at start-up already)."""
    problems = _config_problems(config)
    if problems:
        raise ToolError(f"the http plugin is misconfigured: {'; '.join(problems)}")
    return FetchSettings(
        allow_private=config.get("allow_private", False),
        max_bytes=config.get("max_bytes", DEFAULT_MAX_BYTES),
        timeout_s=float(config.get("timeout_s", DEFAULT_TIMEOUT_S)),
    )


@dataclass(frozen=True)
class _Target:
    """One URL to request, checked: scheme, wire host name and port."""

    url: str
    parts: SplitResult
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.parts.port is None else f"{host}:{self.port}"


def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ToolError(f"'{url[:200]}' is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"only absolute http(s) URLs can be fetched, not '{url[:200]}'")
    if port == 0:
        raise ToolError(f"'{url[:200]}' is not a valid URL: port 0")
    default_port = 443 if parts.scheme == "https" else 80
    return _Target(url=url, parts=parts, host=ascii_hostname(parts.hostname), port=port or default_port)


async def fetch(url: str, *, ctx: ToolContext) -> dict[str, Any]:
    """Fetch a web page or text document over HTTP(S) with GET and return its readable text."""
    settings = fetch_settings(ctx.config)
    try:
        async with asyncio.timeout(settings.timeout_s):
            return await _fetch(url, settings)
    except TimeoutError:
        raise ToolError(f"fetching {url[:200]} took longer than {settings.timeout_s:g} s") from None


async def _fetch(url: str, settings: FetchSettings) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False, trust_env=False) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            target = _target(current)
            address = await vetted_address(target.host, target.port, allow_private=settings.allow_private)
            netloc = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((target.parts.scheme, f"{netloc}:{target.port}", target.parts.path or "/", target.parts.query, ""))
            try:
                request = client.build_request(
                    "GET",
                    pinned,
                    headers={
                        "Host": target.host_header,
                        "User-Agent": USER_AGENT,
                        "Accept": "text/html, text/plain, application/json;q=0.9, */*;q=0.5",
                        "Accept-Encoding": ACCEPT_ENCODING,
                    },
                    extensions={"sni_hostname": target.host},
                )
                response = await client.send(request, stream=True)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise ToolError(f"cannot fetch {current[:200]}: {type(exc).__name__}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    try:
                        current = urljoin(current, response.headers["location"])
                    except ValueError:
                        raise ToolError(f"{current[:200]} redirects to an invalid URL") from None
                    continue
                body, truncated = await _read_body(response, settings.max_bytes)
            finally:
                await response.aclose()
            return await _result(current, response, body, truncated, settings.max_bytes)
        raise ToolError(f"more than {MAX_REDIRECTS} redirects")


async def _read_body(response: httpx.Response, max_bytes: int) -> tuple[bytearray, bool]:
    """At most ``max_bytes`` of decoded body, counted as it is decoded; and whether more was cut."""
    decoder = BoundedDecoder(content_codings(response.headers.get("content-encoding", "")))
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                room = max_bytes - len(body)
                if len(piece) > room:
                    body.extend(piece[:room])
                    return body, True
                body.extend(piece)
                # A well-compressed chunk yields many pieces: let other requests run between them.
                await asyncio.sleep(0)
    except httpx.HTTPError as exc:
        raise ToolError(f"the response body could not be read: {type(exc).__name__}") from None
    return body, False


async def _result(url: str, response: httpx.Response, body: bytearray, truncated: bool, max_bytes: int) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    title = ""
    if content_type in ("text/html", "application/xhtml+xml") or (
        not content_type and text.lstrip().lower().startswith("<!doctype html")
    ):
        title, text = await run_isolated(html_to_text, text)
    elif not (content_type.startswith("text/") or content_type.endswith("json") or content_type.endswith("xml")):
        text = f"[{content_type or 'unknown'} content, {len(body)} bytes, not shown]"
    result: dict[str, Any] = {"url": url, "status": response.status_code, "content_type": content_type}
    if title:
        result["title"] = title
    result["text"] = text
    if truncated:
        result["truncated_at_bytes"] = max_bytes
    return result


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    register(fetch, annotations={"readOnlyHint": True, "openWorldHint": True})


@hookimpl
def plugin_config_errors(plugin_id: str, config: dict[str, Any]) -> list[str]:
    return _config_problems(config)

