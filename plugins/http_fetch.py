"""HTTP: GET a URL and return readable text, refusing internal addresses.

The SSRF guard resolves the host, refuses private, loopback, link-local,
multicast and reserved addresses (unless the organisation's plugin config sets
``allow_private: true``), then connects to the vetted address itself so a DNS
answer cannot change between the check and the connection. Every redirect hop
is checked again. Size and time are capped (``max_bytes``, ``timeout_s``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from runtime import ToolContext, ToolError, hookimpl

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_TIMEOUT_S = 10.0
MAX_REDIRECTS = 5
USER_AGENT = "plugway-http/0.1 (+https://github.com/plugway)"


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ToolError(f"cannot resolve host '{host}'") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _vetted_address(host: str, port: int, allow_private: bool) -> str:
    addresses = await _resolve(host, port)
    if not allow_private:
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address)):
                raise ToolError(
                    f"refused: '{host}' resolves to a private or internal address ({address})"
                )
    return addresses[0]


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip_depth:
            self.parts.append(data)

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in joined.splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> tuple[str, str]:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.title.strip(), parser.text()


async def fetch(url: str, *, ctx: ToolContext) -> dict[str, Any]:
    """Fetch a web page or text document over HTTP(S) with GET and return its readable text."""
    allow_private = bool(ctx.config.get("allow_private", False))
    max_bytes = int(ctx.config.get("max_bytes", DEFAULT_MAX_BYTES))
    timeout_s = float(ctx.config.get("timeout_s", DEFAULT_TIMEOUT_S))
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, allow_private=allow_private, max_bytes=max_bytes, timeout_s=timeout_s)
    except TimeoutError:
        raise ToolError(f"fetching {url} took longer than {timeout_s:g} s") from None


async def _fetch(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ToolError(f"only absolute http(s) URLs can be fetched, not '{current}'")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await _vetted_address(parts.hostname, port, allow_private)
            netloc = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
            host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            request = client.build_request(
                "GET",
                pinned,
                headers={"Host": host_header, "User-Agent": USER_AGENT, "Accept": "text/html, text/plain, application/json;q=0.9, */*;q=0.5"},
                extensions={"sni_hostname": parts.hostname},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ToolError(f"cannot fetch {current}: {type(exc).__name__}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                body = bytearray()
                truncated = False
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        del body[max_bytes:]
                        truncated = True
                        break
            finally:
                await response.aclose()
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            text = body.decode(response.charset_encoding or "utf-8", errors="replace")
            title = ""
            if content_type in ("text/html", "application/xhtml+xml") or (
                not content_type and text.lstrip().lower().startswith("<!doctype html")
            ):
                title, text = html_to_text(text)
            elif not (content_type.startswith("text/") or content_type.endswith("json") or content_type.endswith("xml")):
                text = f"[{content_type or 'unknown'} content, {len(body)} bytes, not shown]"
            result: dict[str, Any] = {"url": current, "status": response.status_code, "content_type": content_type}
            if title:
                result["title"] = title
            result["text"] = text
            if truncated:
                result["truncated_at_bytes"] = max_bytes
            return result
        raise ToolError(f"more than {MAX_REDIRECTS} redirects")


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    register(fetch)


@hookimpl
def plugin_config_errors(plugin_id: str, config: dict[str, Any]) -> list[str]:
    problems = []
    unknown = set(config) - {"allow_private", "max_bytes", "timeout_s"}
    if unknown:
        problems.append(f"unknown settings: {', '.join(sorted(unknown))}")
    if "max_bytes" in config and not (isinstance(config["max_bytes"], int) and config["max_bytes"] > 0):
        problems.append("max_bytes must be a positive integer")
    return problems
