"""An MCP server that requires OAuth, with its own authorization server: the upstream plugway signs in to.

Built from the `mcp` SDK's own components: ``MCPServer`` as the resource server
(bearer tokens verified on every request, a 401 with ``resource_metadata`` without
one, protected resource metadata per RFC 9728) and, in the same app, the SDK's
authorization server routes (RFC 8414 metadata, dynamic client registration,
``/authorize`` with PKCE, ``/token``, ``/revoke``) over an in-memory provider.

The provider's ``/authorize`` sends the browser to this server's ``/login`` page,
which a test "signs in" to with ``?user=alice`` (the account at the upstream); the
``whoami`` tool answers the account the request's token belongs to. A client
credentials grant is served at ``/cc-token`` for ``auth.type: client_credentials``.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from tests.fakes.threaded import ThreadedServer, bind_loopback

SCOPE = "crm"
CC_CLIENT_ID = "machine"
CC_CLIENT_SECRET = "machine-secret-0123456789"


@dataclass
class Refresh:
    """A refresh the authorization server served: how long the replaced access token still had."""

    subject: str | None
    old_token_remaining_s: float


@dataclass
class UpstreamAccounts:
    """The authorization server's state (in memory)."""

    token_lifetime_s: int = 3600
    clients: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    waiting: dict[str, tuple[str, AuthorizationParams]] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    # access token -> the refresh token issued with it (for its remaining life at refresh time)
    paired: dict[str, str] = field(default_factory=dict)
    refreshes: list[Refresh] = field(default_factory=list)
    registrations: int = 0
    authorize_requests: list[AuthorizationParams] = field(default_factory=list)
    base_url: str = ""

    # ----- the SDK's OAuthAuthorizationServerProvider --------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.registrations += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        assert client.client_id is not None
        self.authorize_requests.append(params)
        request_id = secrets.token_urlsafe(12)
        self.waiting[request_id] = (client.client_id, params)
        return f"{self.base_url}/login?request={request_id}"

    def sign_in(self, request_id: str, user: str) -> str:
        """The /login page: ``user`` signs in and approves; the browser goes back to the client."""
        client_id, params = self.waiting.pop(request_id)
        code = secrets.token_urlsafe(16)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            client_id=client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=user,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: OAuthClientInformationFull, authorization_code: str) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None, subject: str | None) -> OAuthToken:
        access = "at-" + secrets.token_urlsafe(16)
        refresh = "rt-" + secrets.token_urlsafe(16)
        expires_at = int(time.time()) + self.token_lifetime_s
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires_at, resource=resource, subject=subject
        )
        self.refresh[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject)
        self.paired[refresh] = access
        return OAuthToken(
            access_token=access, token_type="Bearer", expires_in=self.token_lifetime_s, refresh_token=refresh, scope=" ".join(scopes)
        )

    async def exchange_authorization_code(self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode) -> OAuthToken:
        self.codes.pop(authorization_code.code, None)
        assert client.client_id is not None
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource, authorization_code.subject)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]) -> OAuthToken:
        # Rotation: the refresh token is good once; the access token it came with ends too.
        self.refresh.pop(refresh_token.token, None)
        old = self.access.pop(self.paired.pop(refresh_token.token, ""), None)
        remaining = (old.expires_at - time.time()) if old is not None and old.expires_at else -1.0
        self.refreshes.append(Refresh(refresh_token.subject, remaining))
        assert client.client_id is not None
        return self._issue(client.client_id, scopes, refresh_token.resource, refresh_token.subject)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    def revoke_everything_of(self, subject: str) -> None:
        """What an upstream does when the user disconnects plugway there."""
        for store in (self.access, self.refresh):
            for key in [k for k, v in store.items() if v.subject == subject]:
                del store[key]


class OAuthMcpServer:
    """The protected MCP server and its authorization server on one loopback port."""

    def __init__(self, *, token_lifetime_s: int = 3600) -> None:
        self._sock: socket.socket = bind_loopback()
        self.port = int(self._sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.mcp_url = f"{self.base_url}/mcp"
        self.accounts = UpstreamAccounts(token_lifetime_s=token_lifetime_s, base_url=self.base_url)
        self.calls: list[tuple[str | None, str]] = []  # (subject, tool) the server ran
        server = MCPServer(
            "upstream-crm",
            auth_server_provider=self.accounts,
            auth=AuthSettings(
                issuer_url=self.base_url,  # type: ignore[arg-type]
                resource_server_url=self.mcp_url,  # type: ignore[arg-type]
                required_scopes=[SCOPE],
                client_registration_options=ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]),
                revocation_options=RevocationOptions(enabled=True),
                # RFC 8707: a token issued for another resource is refused.
                validate_token_resource=True,
            ),
        )

        @server.tool()
        def whoami() -> str:
            """The upstream account this request's token belongs to."""
            token = get_access_token()
            subject = token.subject if token is not None else None
            self.calls.append((subject, "whoami"))
            return f"account:{subject}"

        @server.custom_route("/login", methods=["GET"])
        async def login(request: Request) -> Response:
            request_id = request.query_params.get("request", "")
            user = request.query_params.get("user")
            if request_id not in self.accounts.waiting:
                return PlainTextResponse("unknown authorization request", status_code=400)
            if not user:
                return PlainTextResponse("Sign in: add ?user=<account> to this page's address.")
            return RedirectResponse(self.accounts.sign_in(request_id, user), status_code=302)

        @server.custom_route("/cc-token", methods=["POST"])
        async def client_credentials(request: Request) -> Response:
            form = parse_qs((await request.body()).decode())
            if form.get("grant_type") != ["client_credentials"]:
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if form.get("client_id") != [CC_CLIENT_ID] or form.get("client_secret") != [CC_CLIENT_SECRET]:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            access = "cc-" + secrets.token_urlsafe(16)
            self.accounts.access[access] = AccessToken(
                token=access,
                client_id=CC_CLIENT_ID,
                scopes=[SCOPE],
                expires_at=int(time.time()) + 3600,
                resource=(form.get("resource") or [None])[0],
                subject="service:machine",
            )
            return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 3600})

        self._runner = ThreadedServer(server.streamable_http_app(), name="oauth-mcp", lifespan="on")

    def start(self) -> OAuthMcpServer:
        self._runner.start(sock=self._sock)
        return self

    def stop(self) -> None:
        self._runner.stop()
