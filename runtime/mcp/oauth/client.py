"""plugway as an OAuth 2.1 client of an upstream MCP server's authorization server.

Discovery follows the MCP authorization specification: the server's protected
resource metadata (RFC 9728: the ``resource_metadata`` of its 401 challenge, then
the well-known URIs) names its authorization server, whose metadata (RFC 8414, or
OpenID discovery) gives the endpoints. Endpoints given in the configuration skip
discovery. Without a configured client, plugway registers itself (RFC 7591).
Authorization codes are exchanged with PKCE (S256) and every request carries the
resource indicator (RFC 8707).

Nothing here logs or formats a token: errors name the endpoint and the
authorization server's ``error`` code and description only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from pydantic import ValidationError

from runtime.config import McpAuthConfig
from runtime.text import mask_credentials

CLIENT_NAME = "plugway"
_TIMEOUT = httpx2.Timeout(15.0, connect=5.0)


class OAuthError(Exception):
    """An OAuth step failed; the message is for the operator and holds no secret."""


@dataclass(frozen=True)
class AuthServer:
    """Where and how to obtain tokens for one MCP server."""

    token_url: str
    resource: str
    authorization_url: str | None = None
    registration_url: str | None = None
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    auth_methods: tuple[str, ...] = ()  # token_endpoint_auth_methods_supported


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str | None


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str | None = None
    auth_method: str | None = None  # client_secret_post | client_secret_basic | none


def http_client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=_TIMEOUT, follow_redirects=False)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, its S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def _get_json(http: httpx2.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _challenge(http: httpx2.AsyncClient, server_url: str) -> httpx2.Response | None:
    """The server's answer to an unauthenticated MCP request: a 401 names its resource metadata."""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    try:
        return await http.post(server_url, json=ping, headers={"Accept": "application/json, text/event-stream"})
    except httpx2.HTTPError:
        return None


async def discover(http: httpx2.AsyncClient, server_url: str, config: McpAuthConfig) -> AuthServer:
    """The server's authorization server and resource, from its metadata or the configuration."""
    configured_scopes = tuple(config.scopes or ())
    if config.token_url and (config.authorization_url or config.type == "client_credentials"):
        return AuthServer(
            token_url=config.token_url,
            authorization_url=config.authorization_url,
            resource=config.resource or server_url,
            scopes=configured_scopes,
        )
    challenge = await _challenge(http, server_url)
    metadata_url = None
    challenge_scope = None
    if challenge is not None and challenge.status_code in (401, 403):
        metadata_url = extract_field_from_www_auth(challenge, "resource_metadata")
        challenge_scope = extract_field_from_www_auth(challenge, "scope")
    resource_metadata: ProtectedResourceMetadata | None = None
    for url in build_protected_resource_metadata_discovery_urls(metadata_url, server_url):
        found = await _get_json(http, url)
        if found is None:
            continue
        try:
            resource_metadata = ProtectedResourceMetadata.model_validate(found)
            break
        except ValidationError:
            continue
    issuer = str(resource_metadata.authorization_servers[0]) if resource_metadata is not None else None
    server_metadata: OAuthMetadata | None = None
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, server_url):
        found = await _get_json(http, url)
        if found is None:
            continue
        try:
            server_metadata = OAuthMetadata.model_validate(found)
            break
        except ValidationError:
            continue
    if server_metadata is None:
        raise OAuthError(
            f"{mask_credentials(server_url)} publishes no OAuth metadata plugway can use "
            "(RFC 9728 protected resource metadata naming an RFC 8414 authorization server); "
            "give auth.authorization_url and auth.token_url"
        )
    scopes = configured_scopes
    if not scopes and challenge_scope:
        scopes = tuple(challenge_scope.split())
    if not scopes and resource_metadata is not None and resource_metadata.scopes_supported:
        scopes = tuple(resource_metadata.scopes_supported)
    resource = config.resource or (str(resource_metadata.resource) if resource_metadata is not None else server_url)
    return AuthServer(
        token_url=config.token_url or str(server_metadata.token_endpoint),
        authorization_url=config.authorization_url or str(server_metadata.authorization_endpoint),
        registration_url=str(server_metadata.registration_endpoint) if server_metadata.registration_endpoint else None,
        issuer=str(server_metadata.issuer),
        resource=resource,
        scopes=scopes,
        auth_methods=tuple(server_metadata.token_endpoint_auth_methods_supported or ()),
    )


async def register(http: httpx2.AsyncClient, server: AuthServer, redirect_uri: str) -> Client:
    """Register plugway with the authorization server (RFC 7591 dynamic client registration)."""
    if server.registration_url is None:
        raise OAuthError(
            f"the authorization server {server.issuer or server.token_url} does not offer dynamic client registration; "
            "register plugway there (redirect URI " + redirect_uri + ") and give auth.client_id and auth.client_secret"
        )
    method = "client_secret_post" if "client_secret_post" in server.auth_methods or not server.auth_methods else (
        "client_secret_basic" if "client_secret_basic" in server.auth_methods else "none"
    )
    metadata: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    }
    if server.scopes:
        metadata["scope"] = " ".join(server.scopes)
    try:
        response = await http.post(server.registration_url, json=metadata)
    except httpx2.HTTPError as exc:
        raise OAuthError(f"registering with {server.registration_url} failed: {type(exc).__name__}") from None
    if response.status_code not in (200, 201):
        raise OAuthError(f"registering with {server.registration_url} was refused: {_error_of(response)}")
    body = response.json()
    client_id = body.get("client_id") if isinstance(body, dict) else None
    if not isinstance(client_id, str):
        raise OAuthError(f"registering with {server.registration_url} returned no client_id")
    secret = body.get("client_secret")
    return Client(client_id, secret if isinstance(secret, str) else None, body.get("token_endpoint_auth_method") or method)


def authorization_url(
    server: AuthServer, client: Client, *, redirect_uri: str, state: str, code_challenge: str
) -> str:
    if server.authorization_url is None:
        raise OAuthError("no authorization endpoint is known for this server; give auth.authorization_url")
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "resource": server.resource,
    }
    if server.scopes:
        params["scope"] = " ".join(server.scopes)
    separator = "&" if "?" in server.authorization_url else "?"
    return server.authorization_url + separator + urlencode(params)


def _error_of(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        return f"{body['error']}" + (f" ({description})" if isinstance(description, str) else "")
    return f"HTTP {response.status_code}"


async def token_request(
    http: httpx2.AsyncClient, token_url: str, client: Client, form: dict[str, str], *, resource: str | None
) -> TokenSet:
    """POST to the token endpoint; the client authenticates as it registered (post, basic or public)."""
    data = {**form}
    if resource:
        data["resource"] = resource
    headers = {"Accept": "application/json"}
    # client_id in the form too with Basic: servers (the MCP SDK's among them) expect it there.
    data["client_id"] = client.client_id
    if client.client_secret and client.auth_method == "client_secret_basic":
        pair = f"{client.client_id}:{client.client_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    elif client.client_secret:
        data["client_secret"] = client.client_secret
    try:
        response = await http.post(token_url, data=data, headers=headers)
    except httpx2.HTTPError as exc:
        raise OAuthError(f"the token endpoint {mask_credentials(token_url)} cannot be reached: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise TokenRefused(f"the token endpoint {mask_credentials(token_url)} refused: {_error_of(response)}", response.status_code)
    try:
        body = response.json()
    except ValueError:
        raise OAuthError(f"the token endpoint {mask_credentials(token_url)} answered no JSON") from None
    access = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(access, str) or not access:
        raise OAuthError(f"the token endpoint {mask_credentials(token_url)} answered no access_token")
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and expires_in > 0:
        expires_at = datetime.now(UTC) + timedelta(seconds=float(expires_in))
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    return TokenSet(access, refresh if isinstance(refresh, str) else None, expires_at, scope if isinstance(scope, str) else None)


class TokenRefused(OAuthError):
    """The token endpoint answered with an error (a 400 ``invalid_grant`` means: authorize again)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
