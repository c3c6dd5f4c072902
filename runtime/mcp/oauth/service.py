"""UpstreamAuth: bearer tokens for plugins' MCP servers, and the authorizations that grant them.

A server with ``auth: {type: oauth}`` is authorized once per organisation (subject
``''``) by an admin through the console, or, with ``per_user: true``, by each end
user (subject: the request's end user) through a link plugway hands out in a tool
result. Either way plugway is the OAuth client: authorization code with PKCE, its
redirect URI ``<oauth_server.public_url>/oauth/upstream/callback``. A server with
``auth: {type: client_credentials}`` gets a machine token plugway fetches itself
and keeps in memory only.

Tokens are stored sealed (:mod:`runtime.mcp.oauth.secrets`), kept in memory per
process while valid, and refreshed when they expire within ``REFRESH_MARGIN_S``
(before the server could refuse them). Before refreshing, the stored row is read
again: another gateway process may have refreshed it already (and the refresh
token it used may have been rotated). No token is ever logged or returned by an API.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import orjson
from sqlalchemy import Engine

from runtime.config import McpAuthConfig, PluginRef, Settings
from runtime.mcp.oauth import store
from runtime.mcp.oauth.client import (
    AuthServer,
    Client,
    OAuthError,
    TokenRefused,
    TokenSet,
    authorization_url,
    discover,
    http_client,
    pkce_pair,
    register,
    token_request,
)
from runtime.mcp.oauth.secrets import InvalidToken, SecretBox

logger = logging.getLogger("plugway.mcp.oauth")

CALLBACK_PATH = "/oauth/upstream/callback"
LINK_PATH = "/oauth/upstream/authorize"
# A token expiring within this many seconds is refreshed before it is sent.
REFRESH_MARGIN_S = 60.0
PENDING_TTL = timedelta(minutes=10)  # from the redirect to the authorization server to its callback
LINK_TTL_S = 24 * 3600  # an end user's authorization link
_DISCOVERY_TTL_S = 3600.0

Listener = Callable[[str, str, str], None]  # (organisation, plugin id, subject) once authorized


class NotAuthorized(Exception):
    """No usable token: the message says who must authorize, and how."""


@dataclass(frozen=True)
class Grant:
    organisation_id: str
    plugin_id: str
    subject: str
    return_to: str | None


@dataclass
class _Machine:
    access_token: str
    expires_at: datetime | None


def _expiring(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - datetime.now(UTC) <= timedelta(seconds=REFRESH_MARGIN_S)


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= datetime.now(UTC)


class UpstreamAuth:
    """Tokens and authorizations of every OAuth-protected MCP server the configuration names."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.box = SecretBox(settings.secrets_key) if settings.secrets_key else None
        self._tokens: dict[tuple[str, str, str], store.StoredToken] = {}
        # When each cached token was last read from the database: one forgotten in another process
        # stops being used here within key_cache_ttl_s, as a revoked key does.
        self._read_at: dict[tuple[str, str, str], float] = {}
        self._machine: dict[tuple[str, str], _Machine] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._servers: dict[str, tuple[float, AuthServer]] = {}
        self._listeners: list[Listener] = []
        self.refreshes = 0  # tokens refreshed by this process (metrics, tests)

    def on_authorized(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _sealer(self) -> SecretBox:
        if self.box is None:
            raise OAuthError("OAuth tokens are stored encrypted: set 'secrets_key' in the configuration")
        return self.box

    def _lock(self, key: tuple[str, ...]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    @staticmethod
    def _auth(ref: PluginRef) -> tuple[McpAuthConfig, str]:
        if ref.mcp is None or ref.mcp.auth is None or ref.mcp.url is None:
            raise OAuthError(f"plugin '{ref.id}' is not an MCP server with 'auth'")
        return ref.mcp.auth, ref.mcp.url

    # ----- the token a request carries -------------------------------------------------------

    async def bearer(self, organisation_id: str, ref: PluginRef, subject: str = "", *, refresh: bool = False) -> str:
        """The access token for the server, refreshed first if it expires soon (or ``refresh``).

        Raises :class:`NotAuthorized` when nobody has authorized (or the grant was
        revoked), :class:`OAuthError` when the authorization server cannot be used.
        """
        auth, server_url = self._auth(ref)
        if auth.type == "client_credentials":
            return await self._machine_token(organisation_id, ref, auth, server_url, refresh=refresh)
        key = (organisation_id, ref.id, subject)
        cached = self._tokens.get(key)
        if cached is not None and not refresh and self._fresh(key, cached):
            return cached.access_token
        async with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and not refresh and self._fresh(key, cached):
                return cached.access_token
            box = self._sealer()
            stored = await anyio.to_thread.run_sync(
                lambda: store.load_token(
                    self.engine, box, organisation_id=organisation_id, plugin_id=ref.id, subject=subject, server_url=server_url
                )
            )
            if stored is None:
                self._tokens.pop(key, None)
                raise NotAuthorized(self.not_authorized_message(organisation_id, ref, subject))
            self._read_at[key] = time.monotonic()
            if refresh or _expiring(stored.expires_at):
                # Another process may have refreshed it since we cached ours: only refresh what is still old.
                if not (cached is not None and stored.access_token != cached.access_token and not _expiring(stored.expires_at)):
                    try:
                        stored = await self._refresh(organisation_id, ref, subject, server_url, stored)
                    except NotAuthorized:
                        self._tokens.pop(key, None)
                        raise
            self._tokens[key] = stored
            return stored.access_token

    def _fresh(self, key: tuple[str, str, str], cached: store.StoredToken) -> bool:
        """Whether a cached token may be used without reading the database again."""
        age = time.monotonic() - self._read_at.get(key, float("-inf"))
        return age < self.settings.key_cache_ttl_s and not _expiring(cached.expires_at)

    async def _refresh(
        self, organisation_id: str, ref: PluginRef, subject: str, server_url: str, stored: store.StoredToken
    ) -> store.StoredToken:
        if stored.refresh_token is None:
            if _expired(stored.expires_at):
                raise NotAuthorized(
                    f"the authorization of plugin '{ref.id}' expired and gave no refresh token; "
                    + self.not_authorized_message(organisation_id, ref, subject)
                )
            return stored
        try:
            async with http_client() as http:
                fresh = await token_request(
                    http,
                    stored.token_url,
                    stored.client,
                    {"grant_type": "refresh_token", "refresh_token": stored.refresh_token},
                    resource=stored.resource,
                )
        except TokenRefused as exc:
            if exc.status in (400, 401):
                # invalid_grant: revoked or expired at the authorization server; authorize again.
                await anyio.to_thread.run_sync(
                    lambda: store.delete_tokens(self.engine, organisation_id=organisation_id, plugin_id=ref.id, subject=subject)
                )
                logger.warning("the OAuth grant of MCP plugin %s (%s) is no longer valid: %s", ref.id, organisation_id, exc)
                raise NotAuthorized(
                    f"the authorization of plugin '{ref.id}' was refused by its authorization server; "
                    + self.not_authorized_message(organisation_id, ref, subject)
                ) from None
            raise
        except OAuthError:
            if not _expired(stored.expires_at):
                return stored  # still good for a while: the next call tries again
            raise
        tokens = TokenSet(
            fresh.access_token, fresh.refresh_token or stored.refresh_token, fresh.expires_at, fresh.scope or stored.scope
        )
        box = self._sealer()
        await anyio.to_thread.run_sync(
            lambda: store.save_token(
                self.engine,
                box,
                organisation_id=organisation_id,
                plugin_id=ref.id,
                subject=subject,
                server_url=server_url,
                tokens=tokens,
                token_url=stored.token_url,
                client=stored.client,
                resource=stored.resource,
                created_by=None,
            )
        )
        self.refreshes += 1
        logger.info("refreshed the OAuth token of MCP plugin %s (%s)", ref.id, organisation_id)
        return store.StoredToken(
            tokens.access_token, tokens.refresh_token, tokens.expires_at, stored.token_url, stored.client, stored.resource, tokens.scope
        )

    async def _machine_token(
        self, organisation_id: str, ref: PluginRef, auth: McpAuthConfig, server_url: str, *, refresh: bool
    ) -> str:
        key = (organisation_id, ref.id)
        cached = self._machine.get(key)
        if cached is not None and not refresh and not _expiring(cached.expires_at):
            return cached.access_token
        async with self._lock(key):
            cached = self._machine.get(key)
            if cached is not None and not refresh and not _expiring(cached.expires_at):
                return cached.access_token
            server = await self._server(ref)
            assert auth.client_id is not None
            client = Client(auth.client_id, auth.client_secret, _configured_method(server))
            form = {"grant_type": "client_credentials"}
            if server.scopes:
                form["scope"] = " ".join(server.scopes)
            async with http_client() as http:
                tokens = await token_request(http, server.token_url, client, form, resource=server.resource)
            self._machine[key] = _Machine(tokens.access_token, tokens.expires_at)
            return tokens.access_token

    def not_authorized_message(self, organisation_id: str, ref: PluginRef, subject: str) -> str:
        if subject:
            return f"end user '{subject}' has not authorized plugin '{ref.id}' yet"
        return (
            f"plugin '{ref.id}' is not authorized for organisation '{organisation_id}' yet: "
            "an admin authorizes it in the console (Plugins page)"
        )

    # ----- authorizing ------------------------------------------------------------------------

    async def _server(self, ref: PluginRef) -> AuthServer:
        auth, server_url = self._auth(ref)
        key = orjson.dumps([server_url, auth.model_dump(mode="json")]).decode()
        now = asyncio.get_running_loop().time()
        cached = self._servers.get(key)
        if cached is not None and now - cached[0] < _DISCOVERY_TTL_S:
            return cached[1]
        async with http_client() as http:
            server = await discover(http, server_url, auth)
        self._servers[key] = (now, server)
        return server

    @property
    def public_url(self) -> str | None:
        """The gateway's public address (``oauth_server.public_url``), shared with /mcp's authorization server."""
        return self.settings.oauth_server.public_url

    def redirect_uri(self, base_url: str | None = None) -> str:
        base = self.public_url or (base_url or "").rstrip("/")
        if not base:
            raise OAuthError("set 'oauth_server.public_url' in the configuration: the OAuth redirect URI is built on it")
        return base + CALLBACK_PATH

    async def start(
        self,
        organisation_id: str,
        ref: PluginRef,
        *,
        subject: str = "",
        base_url: str | None = None,
        return_to: str | None = None,
        created_by: str | None = None,
    ) -> str:
        """Begin an authorization: the URL of the authorization server's page to send the person to."""
        auth, server_url = self._auth(ref)
        if auth.type != "oauth":
            raise OAuthError(f"plugin '{ref.id}' uses client credentials: there is nothing to authorize")
        if subject and not auth.per_user:
            raise OAuthError(f"plugin '{ref.id}' is authorized per organisation, not per end user")
        if not subject and auth.per_user:
            raise OAuthError(f"plugin '{ref.id}' is authorized by each end user (per_user), not by the organisation")
        box = self._sealer()
        redirect_uri = self.redirect_uri(base_url)
        server = await self._server(ref)
        client = await self._client(ref, auth, server, redirect_uri)
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(32)
        pending = store.Pending(
            organisation_id=organisation_id,
            plugin_id=ref.id,
            subject=subject,
            server_url=server_url,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            token_url=server.token_url,
            client=client,
            issuer=server.issuer,
            resource=server.resource,
            return_to=return_to,
            created_by=created_by,
        )
        expires_at = datetime.now(UTC) + PENDING_TTL
        await anyio.to_thread.run_sync(lambda: store.save_pending(self.engine, box, state=state, pending=pending, expires_at=expires_at))
        return authorization_url(server, client, redirect_uri=redirect_uri, state=state, code_challenge=challenge)

    async def _client(self, ref: PluginRef, auth: McpAuthConfig, server: AuthServer, redirect_uri: str) -> Client:
        if auth.client_id:
            return Client(auth.client_id, auth.client_secret, _configured_method(server) if auth.client_secret else "none")
        box = self._sealer()
        issuer = server.issuer or server.token_url
        async with self._lock(("client", issuer, redirect_uri)):
            known = await anyio.to_thread.run_sync(lambda: store.load_client(self.engine, box, issuer=issuer, redirect_uri=redirect_uri))
            if known is not None:
                return known
            async with http_client() as http:
                client = await register(http, server, redirect_uri)
            await anyio.to_thread.run_sync(
                lambda: store.save_client(self.engine, box, issuer=issuer, redirect_uri=redirect_uri, client=client)
            )
            logger.info("registered plugway as an OAuth client of %s (for MCP plugin %s)", issuer, ref.id)
            return client

    async def complete(self, *, state: str, code: str, issuer: str | None = None) -> Grant:
        """The authorization server's callback: exchange the code, store the token (raises OAuthError)."""
        box = self._sealer()
        pending = await anyio.to_thread.run_sync(lambda: store.take_pending(self.engine, box, state=state))
        if pending is None:
            raise OAuthError("this authorization is unknown or expired (it is good for 10 minutes, once): start it again")
        if issuer is not None and pending.issuer is not None and issuer.rstrip("/") != pending.issuer.rstrip("/"):
            # RFC 9207: a code from another authorization server than the one we sent the person to.
            raise OAuthError("the authorization answer came from another authorization server than expected")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.code_verifier,
        }
        async with http_client() as http:
            tokens = await token_request(http, pending.token_url, pending.client, form, resource=pending.resource)
        await anyio.to_thread.run_sync(
            lambda: store.save_token(
                self.engine,
                box,
                organisation_id=pending.organisation_id,
                plugin_id=pending.plugin_id,
                subject=pending.subject,
                server_url=pending.server_url,
                tokens=tokens,
                token_url=pending.token_url,
                client=pending.client,
                resource=pending.resource,
                created_by=pending.created_by,
            )
        )
        self._tokens.pop((pending.organisation_id, pending.plugin_id, pending.subject), None)
        logger.info(
            "MCP plugin %s authorized for %s%s",
            pending.plugin_id,
            pending.organisation_id,
            " (an end user)" if pending.subject else "",
        )
        for listener in self._listeners:
            listener(pending.organisation_id, pending.plugin_id, pending.subject)
        return Grant(pending.organisation_id, pending.plugin_id, pending.subject, pending.return_to)

    async def discard(self, state: str) -> None:
        """Drop an authorization the authorization server refused (its state is good for nothing now)."""
        box = self._sealer()
        await anyio.to_thread.run_sync(lambda: store.take_pending(self.engine, box, state=state))

    async def forget(self, organisation_id: str, ref: PluginRef, *, subject: str | None) -> int:
        """Delete the organisation's authorization (subject ''), one end user's, or all (None)."""
        removed = await anyio.to_thread.run_sync(
            lambda: store.delete_tokens(self.engine, organisation_id=organisation_id, plugin_id=ref.id, subject=subject)
        )
        for key in [k for k in self._tokens if k[:2] == (organisation_id, ref.id) and (subject is None or k[2] == subject)]:
            del self._tokens[key]
        return removed

    async def authorizations(self, organisation_id: str, ref: PluginRef) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(
            lambda: store.authorizations(self.engine, organisation_id=organisation_id, plugin_id=ref.id)
        )

    # ----- end users' links -------------------------------------------------------------------

    def user_link(self, organisation_id: str, ref: PluginRef, subject: str) -> str:
        """The link an end user opens to authorize a per-user server (sealed, good for a day)."""
        if self.public_url is None:
            raise OAuthError("set 'oauth_server.public_url' in the configuration: end users' authorization links are built on it")
        ticket = self._sealer().seal(orjson.dumps({"o": organisation_id, "p": ref.id, "s": subject}).decode())
        return f"{self.public_url}{LINK_PATH}?ticket={ticket}"

    def open_link(self, ticket: str) -> tuple[str, str, str]:
        """(organisation, plugin id, subject) of a link plugway handed out (raises OAuthError)."""
        try:
            data = orjson.loads(self._sealer().open(ticket, ttl_s=LINK_TTL_S))
        except (InvalidToken, orjson.JSONDecodeError, UnicodeDecodeError):
            raise OAuthError("this authorization link is not valid or has expired: ask for a new one") from None
        return str(data["o"]), str(data["p"]), str(data["s"])


def _configured_method(server: AuthServer) -> str:
    methods = server.auth_methods
    if methods and "client_secret_post" not in methods and "client_secret_basic" in methods:
        return "client_secret_basic"
    return "client_secret_post"
