"""Client ID Metadata Documents: a ``client_id`` that is an https URL of the client's own metadata.

The authorization server fetches the URL a stranger gave it, so the fetch is fenced
(SSRF): https only, the host resolved once and every address it resolves to must be
public (unless ``oauth_server.client_metadata_private_hosts``, for tests), the
connection made to that checked address (no second resolution an attacker's DNS could
answer differently), no redirects, a short timeout and a small size cap. The document
must name itself (``client_id`` equal to its URL), list its redirect URIs, and be a
public client (``token_endpoint_auth_method`` ``none``). Documents are cached for a few
minutes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson
import pydantic
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import AnyUrl

log = logging.getLogger("plugway.oauth")

MAX_DOCUMENT_BYTES = 5 * 1024
FETCH_TIMEOUT_S = 5.0
CACHE_TTL_S = 300.0

Resolver = Callable[[str, int], Awaitable[list[str]]]


LOOPBACK_HOSTS = {"127.0.0.1", "[::1]", "::1", "localhost"}


class Client(OAuthClientInformationFull):
    """A client as the authorization endpoint checks it: a loopback redirect URI may use any port.

    RFC 8252 §7.3: a native application listens on an ephemeral loopback port, so its
    registration (or metadata document) names ``http://127.0.0.1/callback`` and the
    request brings ``http://127.0.0.1:51234/callback``.
    """

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and redirect_uri.scheme == "http" and redirect_uri.host in LOOPBACK_HOSTS:
            for registered in self.redirect_uris or ():
                if (registered.scheme, registered.host, registered.path, registered.query) == (
                    redirect_uri.scheme,
                    redirect_uri.host,
                    redirect_uri.path,
                    redirect_uri.query,
                ):
                    return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


class ClientMetadataError(ValueError):
    """Why a client_id URL cannot be used; phrased for the person at the browser."""


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class ClientMetadataFetcher:
    """Fetches and checks client metadata documents; ``resolve`` and ``ssl_context`` may be replaced (tests)."""

    def __init__(self, *, allow_private_hosts: bool = False, scopes: list[str] | None = None) -> None:
        self.allow_private_hosts = allow_private_hosts
        self.scopes = scopes or ["mcp"]
        self.resolve: Resolver = system_resolve
        self.ssl_context: ssl.SSLContext | None = None
        self._cache: dict[str, tuple[float, OAuthClientInformationFull]] = {}

    async def client(self, client_id: str) -> OAuthClientInformationFull:
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        document = await self._fetch(client_id)
        client = self._client_of(client_id, document)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[client_id] = (time.monotonic() + CACHE_TTL_S, client)
        return client

    @staticmethod
    def _check_url(client_id: str) -> tuple[str, int]:
        if len(client_id) > 2000:
            raise ClientMetadataError("The client_id URL is too long.")
        parts = urlsplit(client_id)
        if parts.scheme != "https" or not parts.hostname:
            raise ClientMetadataError("A client_id URL must be https.")
        if parts.username or parts.password or parts.fragment:
            raise ClientMetadataError("A client_id URL may not carry credentials or a fragment.")
        if parts.path in ("", "/") or "/./" in parts.path + "/" or "/../" in parts.path + "/":
            raise ClientMetadataError("A client_id URL needs a path (and no dot segments).")
        try:
            port = parts.port or 443
        except ValueError:
            raise ClientMetadataError("The client_id URL's port is not valid.") from None
        return parts.hostname, port

    async def _address(self, host: str, port: int) -> str:
        try:
            addresses = [host] if _is_ip(host) else await self.resolve(host, port)
        except OSError:
            raise ClientMetadataError(f"The client_id host '{host}' does not resolve.") from None
        if not addresses:
            raise ClientMetadataError(f"The client_id host '{host}' does not resolve.")
        if not self.allow_private_hosts and not all(_public(address) for address in addresses):
            # Every address, not just the first: a name resolving to a public and a private
            # address must not get the private one on a retry.
            raise ClientMetadataError(f"The client_id host '{host}' is not a public address.")
        return addresses[0]

    async def _fetch(self, client_id: str) -> dict[str, Any]:
        host, port = self._check_url(client_id)
        address = await self._address(host, port)
        parts = urlsplit(client_id)
        literal = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
        verify: ssl.SSLContext | bool = self.ssl_context if self.ssl_context is not None else True
        try:
            async with httpx.AsyncClient(verify=verify, follow_redirects=False, timeout=FETCH_TIMEOUT_S, trust_env=False) as http:
                request = http.build_request(
                    "GET",
                    pinned,
                    headers={"Host": parts.netloc, "Accept": "application/json"},
                    extensions={"sni_hostname": host},
                )
                response = await http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise ClientMetadataError(f"The client metadata document answered HTTP {response.status_code}.")
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise ClientMetadataError(f"The client metadata document is over {MAX_DOCUMENT_BYTES} bytes.")
                finally:
                    await response.aclose()
        except httpx.HTTPError as exc:
            log.info("client metadata document %s not fetched: %s", client_id, exc)
            raise ClientMetadataError("The client metadata document could not be fetched.") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientMetadataError("The client metadata document is not JSON.") from None
        if not isinstance(document, dict):
            raise ClientMetadataError("The client metadata document is not a JSON object.")
        return document

    def _client_of(self, client_id: str, document: dict[str, Any]) -> OAuthClientInformationFull:
        if document.get("client_id") != client_id:
            raise ClientMetadataError("The client metadata document's client_id is not its own URL.")
        if document.get("client_secret") is not None or document.get("client_secret_expires_at") is not None:
            raise ClientMetadataError("A client metadata document may not carry a client secret.")
        method = document.get("token_endpoint_auth_method") or "none"
        if method != "none":
            raise ClientMetadataError("Only public clients (token_endpoint_auth_method 'none') may use a client metadata document.")
        redirect_uris = document.get("redirect_uris")
        if not isinstance(redirect_uris, list) or not redirect_uris:
            raise ClientMetadataError("The client metadata document lists no redirect_uris.")
        try:
            return Client.model_validate(
                {
                    "client_id": client_id,
                    "client_name": document.get("client_name") if isinstance(document.get("client_name"), str) else None,
                    "redirect_uris": redirect_uris,
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                    "scope": " ".join(self.scopes),
                }
            )
        except pydantic.ValidationError:
            raise ClientMetadataError("The client metadata document's redirect_uris are not URLs.") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
