"""plugway's authorization server, as the MCP SDK's OAuth handlers drive it.

The SDK's handlers (``mcp.server.auth.handlers``) parse and check the protocol
(authorization request, PKCE S256 verification, redirect URI binding, registration,
revocation); :class:`PlugwayAuthorizationServer` is the provider they call, backed by
:mod:`runtime.oauth.store`. What plugway adds:

- the authorization endpoint does not decide: it parks the request and sends the
  browser to the console's consent page (``/console/oauth?request=…``);
- the resource indicator (RFC 8707) must name this gateway's ``/mcp``; tokens are
  bound to it and refused anywhere else;
- a client_id that is an https URL is a Client ID Metadata Document
  (:mod:`runtime.oauth.cimd`);
- registered clients' secrets are stored hashed (:class:`HashedClientAuthenticator`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio.to_thread
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request

from runtime.config import OAuthServerConfig
from runtime.oauth import store
from runtime.oauth.cimd import Client, ClientMetadataError, ClientMetadataFetcher, is_metadata_url
from runtime.storage.keys import hash_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("plugway.oauth")

# What a token may be used for. The token acts as a gateway key whose scopes are these.
SCOPES = ["mcp"]
RESOURCE_PATH = "/mcp"
CONSENT_PATH = "/console/oauth"

# The public base URL of the request being served (scheme://host[:port]).
current_base: ContextVar[str] = ContextVar("plugway_oauth_base", default="")


def public_base(request: Request, settings: OAuthServerConfig) -> str:
    """The issuer and the base of the resource: configured, or this request's own scheme and host."""
    if settings.public_url:
        return settings.public_url
    return f"{request.url.scheme}://{request.url.netloc}"


def resource_url(base: str) -> str:
    return base + RESOURCE_PATH


class CodeOfGrant(AuthorizationCode):
    grant_id: str


class RefreshOfGrant(RefreshToken):
    grant_id: str


class AccessOfGrant(AccessToken):
    grant_id: str


class PlugwayAuthorizationServer:
    """The provider the SDK's OAuth handlers call (``OAuthAuthorizationServerProvider``)."""

    def __init__(self, settings: OAuthServerConfig, engine: Any) -> None:
        self.settings = settings
        # The engine is opened with the gateway, after the routes are installed: a callable then.
        self._engine = engine
        self.metadata_documents = ClientMetadataFetcher(
            allow_private_hosts=settings.client_metadata_private_hosts, scopes=SCOPES
        )

    @property
    def engine(self) -> Engine:
        engine: Engine = self._engine()
        return engine

    async def _run(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(function, self.engine, *args, **kwargs))

    # -- clients --------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if is_metadata_url(client_id):
            if not self.settings.client_metadata_documents:
                return None
            try:
                return await self.metadata_documents.client(client_id)
            except ClientMetadataError as exc:
                # The SDK says "client not found"; the reason goes to the log.
                log.info("client_id %s refused: %s", client_id, exc)
                return None
        if len(client_id) > 64:
            return None
        found = await self._run(store.load_client, client_id)
        if found is None:
            return None
        metadata, _secret_hash = found
        return Client.model_validate({**metadata, "client_id": client_id})

    async def secret_hash(self, client_id: str) -> str | None:
        found = await self._run(store.load_client, client_id)
        return found[1] if found is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        metadata = client_info.model_dump(mode="json", exclude_none=True, exclude={"client_secret", "client_id"})
        await self._run(store.save_client, client_info.client_id, metadata, client_info.client_secret)

    # -- authorization ---------------------------------------------------------------------

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        base = current_base.get()
        expected = resource_url(base)
        # RFC 8707: the token is for this gateway's /mcp, or for nothing. A client that names no
        # resource (before 2025-06-18) gets a token bound to /mcp all the same.
        if params.resource is not None and params.resource.rstrip("/") != expected:
            raise AuthorizeError("invalid_target", f"This authorization server issues tokens for {expected} only.")
        stored = {
            "state": params.state,
            "scopes": params.scopes or list(SCOPES),
            "code_challenge": params.code_challenge,
            "redirect_uri": str(params.redirect_uri),
            "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
            "resource": expected,
            "issuer": base,
        }
        authorization_id = await self._run(
            store.create_authorization,
            client_id=client.client_id,
            client_name=client.client_name,
            params=stored,
            ttl_s=self.settings.consent_ttl_s,
        )
        return f"{base}{CONSENT_PATH}?request={authorization_id}"

    async def load_authorization_code(self, client: OAuthClientInformationFull, authorization_code: str) -> CodeOfGrant | None:
        found = await self._run(store.load_code, authorization_code)
        if found is None:
            return None
        row, grant = found
        params = store.params_of(row)
        return CodeOfGrant(
            code=authorization_code,
            scopes=grant.scopes.split(),
            expires_at=store.aware(row.expires_at).timestamp(),
            client_id=row.client_id,
            code_challenge=params["code_challenge"],
            redirect_uri=params["redirect_uri"],
            redirect_uri_provided_explicitly=params["redirect_uri_provided_explicitly"],
            resource=grant.resource,
            subject=grant.key_id,
            grant_id=grant.id,
        )

    async def exchange_authorization_code(self, client: OAuthClientInformationFull, authorization_code: CodeOfGrant) -> OAuthToken:
        issued = await self._run(
            store.exchange_code,
            authorization_code.code,
            access_ttl_s=self.settings.access_token_ttl_s,
            refresh_ttl_s=self.settings.refresh_token_ttl_s,
        )
        if issued is None:
            raise TokenError("invalid_grant", "authorization code does not exist")
        return _token(issued)

    # -- refresh and revocation --------------------------------------------------------------

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshOfGrant | None:
        if not refresh_token.startswith(store.REFRESH_TOKEN_PREFIX):
            return None
        grant = await self._run(store.load_refresh, refresh_token)
        if grant is None:
            return None
        return RefreshOfGrant(
            token=refresh_token, client_id=grant.client_id, scopes=grant.scopes.split(), resource=grant.resource, grant_id=grant.id
        )

    async def exchange_refresh_token(self, client: OAuthClientInformationFull, refresh_token: RefreshOfGrant, scopes: list[str]) -> OAuthToken:
        issued = await self._run(
            store.rotate_refresh,
            refresh_token.token,
            access_ttl_s=self.settings.access_token_ttl_s,
            refresh_ttl_s=self.settings.refresh_token_ttl_s,
        )
        if issued is None:
            raise TokenError("invalid_grant", "refresh token does not exist")
        return _token(issued)

    async def load_access_token(self, token: str) -> AccessOfGrant | None:
        if not token.startswith(store.ACCESS_TOKEN_PREFIX):
            return None
        found = await self._run(store.find_token, token)
        if found is None or found.kind != "access":
            return None
        grant = found.grant
        return AccessOfGrant(
            token=token,
            client_id=grant.client_id,
            scopes=grant.scopes.split(),
            expires_at=int(found.expires_at.timestamp()),
            resource=grant.resource,
            grant_id=grant.id,
        )

    async def revoke_token(self, token: AccessOfGrant | RefreshOfGrant) -> None:
        # RFC 7009 §2.1: revoking either token of a grant ends the grant (and its gateway key).
        await self._run(store.revoke_grant, token.grant_id)

    async def exchange_identity_assertion(self, client: OAuthClientInformationFull, params: Any) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "This authorization server does not accept identity assertions.")


def _token(issued: store.IssuedTokens) -> OAuthToken:
    return OAuthToken(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        refresh_token=issued.refresh_token,
    )


class HashedClientAuthenticator(ClientAuthenticator):
    """The SDK's client authentication at the token and revocation endpoints, against a hashed secret."""

    def __init__(self, provider: PlugwayAuthorizationServer) -> None:
        super().__init__(provider)  # type: ignore[arg-type]
        self.server = provider

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        form = await request.form()
        client_id = form.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise AuthenticationError("Missing client_id")
        client = await self.server.get_client(client_id)
        if client is None:
            raise AuthenticationError("Invalid client_id")
        method = client.token_endpoint_auth_method or "client_secret_post"
        if method == "none":
            return client
        presented: str | None = None
        if method == "client_secret_basic":
            header = request.headers.get("authorization", "")
            if not header.startswith("Basic "):
                raise AuthenticationError("Missing or invalid Basic authentication in Authorization header")
            try:
                basic_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationError("Invalid Basic authentication header") from None
            if unquote(basic_id) != client_id:
                raise AuthenticationError("Client ID mismatch in Basic auth")
            presented = unquote(secret)
        elif method == "client_secret_post":
            value = form.get("client_secret")
            presented = value if isinstance(value, str) else None
        else:
            raise AuthenticationError(f"Unsupported auth method: {method}")
        stored = await self.server.secret_hash(client_id)
        if not presented or stored is None or not hmac.compare_digest(stored, hash_key(presented)):
            raise AuthenticationError("Invalid client_secret")
        if client.client_secret_expires_at and client.client_secret_expires_at < int(time.time()):
            raise AuthenticationError("Client secret has expired")
        return client
