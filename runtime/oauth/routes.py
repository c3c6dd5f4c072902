"""The authorization server's HTTP surface.

Public (what an MCP client discovers and calls):

- ``GET /.well-known/oauth-protected-resource[/mcp]``: RFC 9728 metadata of ``/mcp``;
- ``GET /.well-known/oauth-authorization-server`` (and ``/.well-known/openid-configuration``):
  RFC 8414 metadata;
- ``/oauth/authorize``, ``/oauth/token``, ``/oauth/register``, ``/oauth/revoke``: the MCP
  SDK's handlers over :class:`~runtime.oauth.server.PlugwayAuthorizationServer`.

For the console (admin keys only, under ``/admin/v1/oauth``): read a pending
authorization request, approve it (organisation, scopes, optional limits) or deny it,
list the grants and revoke one.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError
from mcp.server.auth.provider import construct_redirect_uri
from mcp.server.auth.settings import ClientRegistrationOptions
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.api.deps import GatewayDep
from runtime.config import OAuthServerConfig
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.errors import GatewayError, invalid_request
from runtime.limits import LimiterUnavailable
from runtime.oauth import store
from runtime.oauth.bearer import PROTECTED_RESOURCE_PATH
from runtime.oauth.cimd import ClientMetadataError, is_metadata_url
from runtime.oauth.server import (
    SCOPES,
    HashedClientAuthenticator,
    PlugwayAuthorizationServer,
    current_base,
    public_base,
    resource_url,
)
from runtime.storage.keys import InvalidKeyValue

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"
REGISTER_PATH = "/oauth/register"
REVOKE_PATH = "/oauth/revoke"
NO_STORE = {"Cache-Control": "no-store"}


def protected_resource_metadata(base: str) -> dict[str, Any]:
    return {
        "resource": resource_url(base),
        "authorization_servers": [base],
        "scopes_supported": SCOPES,
        "bearer_methods_supported": ["header"],
        "resource_name": "plugway",
    }


def authorization_server_metadata(base: str, settings: OAuthServerConfig) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "issuer": base,
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "client_id_metadata_document_supported": settings.client_metadata_documents,
        # RFC 9207: the redirect back carries `iss`, so a client can tell authorization servers apart.
        "authorization_response_iss_parameter_supported": True,
    }
    if settings.dynamic_client_registration:
        metadata["registration_endpoint"] = base + REGISTER_PATH
    return metadata


class _WithBase:
    """Runs an SDK handler with the request's public base URL known to the provider; CORS for browser clients."""

    def __init__(self, app: ASGIApp, settings: OAuthServerConfig, *, cors: bool) -> None:
        self.settings = settings
        self.app: ASGIApp = (
            CORSMiddleware(app, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"])
            if cors
            else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request as StarletteRequest

        token = current_base.set(public_base(StarletteRequest(scope), self.settings))
        try:
            await self.app(scope, receive, send)
        finally:
            current_base.reset(token)


class _Route(Route):
    """A Starlette route that names itself in the scope, as FastAPI's do: metrics and the
    request log then say ``/oauth/token`` rather than "unmatched"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse(body, headers={"Cache-Control": "max-age=300"})


def public_routes(provider: PlugwayAuthorizationServer, settings: OAuthServerConfig) -> list[Route]:
    authenticator = HashedClientAuthenticator(provider)

    async def resource_metadata(request: Request) -> Response:
        return _json(protected_resource_metadata(public_base(request, settings)))

    async def server_metadata(request: Request) -> Response:
        return _json(authorization_server_metadata(public_base(request, settings), settings))

    async def token(request: Request) -> Response:
        # RFC 8707 §2.2: a token request naming another resource is refused (the SDK's handler
        # ignores `resource` at the token endpoint; the code is already bound to /mcp).
        form = await request.form()
        named = form.get("resource")
        if isinstance(named, str) and named.rstrip("/") != resource_url(current_base.get()):
            return JSONResponse(
                {"error": "invalid_target", "error_description": f"Tokens are issued for {resource_url(current_base.get())} only."},
                status_code=400,
                headers={**NO_STORE, "Pragma": "no-cache"},
            )
        response: Response = await TokenHandler(provider, authenticator).handle(request)  # type: ignore[arg-type]
        return response

    async def revoke(request: Request) -> Response:
        # RFC 7009. Not the SDK's handler: it requires a client_secret field even from public
        # clients, which send none.
        try:
            client = await authenticator.authenticate_request(request)
        except AuthenticationError as exc:
            return JSONResponse({"error": "invalid_client", "error_description": exc.message}, status_code=401, headers=NO_STORE)
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "invalid_request", "error_description": "token is required"}, status_code=400, headers=NO_STORE)
        found = await provider.load_access_token(token) or await provider.load_refresh_token(client, token)
        # An unknown token, or another client's, is answered 200 all the same (RFC 7009 §2.2).
        if found is not None and found.client_id == client.client_id:
            await provider.revoke_token(found)
        return Response(status_code=200, headers={**NO_STORE, "Pragma": "no-cache"})

    authorization = AuthorizationHandler(provider)

    async def authorize(request: Request) -> Response:
        # The SDK's handler says only "client not found" of a metadata document it could not use:
        # say why, since the person at the browser (or the client's developer) can act on it.
        params = request.query_params if request.method == "GET" else await request.form()
        client_id = params.get("client_id")
        if isinstance(client_id, str) and is_metadata_url(client_id) and settings.client_metadata_documents:
            try:
                await provider.metadata_documents.client(client_id)
            except ClientMetadataError as exc:
                return JSONResponse({"error": "invalid_request", "error_description": f"client_id {client_id}: {exc}"}, status_code=400, headers=NO_STORE)
        response: Response = await authorization.handle(request)
        return response

    def wrap(handler: Any, *, cors: bool = True) -> ASGIApp:
        return _WithBase(request_response(handler), settings, cors=cors)

    def throttled(handler: Any) -> Any:
        """The endpoint, at most ``requests_per_minute_per_ip`` times a minute from one address."""
        if settings.requests_per_minute_per_ip is None:
            return handler

        async def handle(request: Request) -> Response:
            address = request.client.host if request.client else "unknown"
            try:
                decision = await request.app.state.gateway.limiter.acquire(f"oauth-ip:{address}", rpm=settings.requests_per_minute_per_ip, daily_tokens=None)
            except LimiterUnavailable:
                return JSONResponse({"error": "temporarily_unavailable", "error_description": "The rate limiter cannot be reached."}, status_code=503, headers=NO_STORE)
            if not decision.allowed:
                retry = max(1, math.ceil(decision.retry_after_s or 1))
                return JSONResponse(
                    {"error": "slow_down", "error_description": f"Too many requests from this address; retry in {retry} s."},
                    status_code=429,
                    headers={**NO_STORE, "Retry-After": str(retry)},
                )
            response: Response = await handler(request)
            return response

        return handle

    routes: list[Route] = [
        _Route(PROTECTED_RESOURCE_PATH, wrap(resource_metadata), methods=["GET", "OPTIONS"]),
        _Route(PROTECTED_RESOURCE_PATH + "/mcp", wrap(resource_metadata), methods=["GET", "OPTIONS"]),
        _Route("/.well-known/oauth-authorization-server", wrap(server_metadata), methods=["GET", "OPTIONS"]),
        _Route("/.well-known/openid-configuration", wrap(server_metadata), methods=["GET", "OPTIONS"]),
        # No CORS on the authorization endpoint: a browser is sent there, never fetches it.
        _Route(AUTHORIZE_PATH, wrap(throttled(authorize), cors=False), methods=["GET", "POST"]),
        _Route(TOKEN_PATH, wrap(token), methods=["POST", "OPTIONS"]),
        _Route(REVOKE_PATH, wrap(revoke), methods=["POST", "OPTIONS"]),
    ]
    if settings.dynamic_client_registration:
        options = ClientRegistrationOptions(enabled=True, valid_scopes=SCOPES, default_scopes=SCOPES)
        routes.append(_Route(REGISTER_PATH, wrap(throttled(RegistrationHandler(provider, options).handle)), methods=["POST", "OPTIONS"]))
    for route in routes:
        route.include_in_schema = False
    return routes


# -- consent and grants, for the console --------------------------------------------------------

router = APIRouter(tags=["admin: oauth"])


def _gone(authorization_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"No authorization request '{authorization_id}' is waiting: it was answered, or it expired. Start again from the application.",
        code="not_found",
        type="invalid_request_error",
    )


@router.get("/admin/v1/oauth/requests/{authorization_id}")
async def read_request(authorization_id: str, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    """A sign-in waiting for consent: which application, where it sends the answer, what it asks for."""
    row = await anyio.to_thread.run_sync(store.pending_authorization, gateway.engine, authorization_id)
    if row is None:
        raise _gone(authorization_id)
    params = store.params_of(row)
    return {
        "id": row.id,
        "client_id": row.client_id,
        "client_name": row.client_name,
        "redirect_host": urlsplit(params["redirect_uri"]).netloc,
        "scopes": params["scopes"],
        "resource": params["resource"],
        "organisations": [organisation.id for organisation in gateway.settings.organisations],
        "expires_at": store.aware(row.expires_at).isoformat(),
    }


class Approval(BaseModel):
    organisation: str
    scopes: list[str] = Field(default_factory=lambda: list(SCOPES))
    rpm: int | None = None
    daily_tokens: int | None = None


@router.post("/admin/v1/oauth/requests/{authorization_id}/approve")
async def approve_request(authorization_id: str, body: Approval, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    """Consent: the application acts as a new gateway key of this organisation. Answers where to send the browser."""
    if gateway.organisation(body.organisation) is None:
        raise invalid_request(f"Organisation '{body.organisation}' is not configured.", param="organisation")
    unknown = [scope for scope in body.scopes if scope not in SCOPES]
    if unknown or not body.scopes:
        raise invalid_request(f"scopes must be among {', '.join(SCOPES)}.", param="scopes")
    row = await anyio.to_thread.run_sync(store.pending_authorization, gateway.engine, authorization_id)
    if row is None:
        raise _gone(authorization_id)
    params = store.params_of(row)
    try:
        approved = await anyio.to_thread.run_sync(
            partial(
                store.approve,
                gateway.engine,
                authorization_id,
                organisation_id=body.organisation,
                scopes=body.scopes,
                key_scopes=body.scopes,
                approved_by=admin.actor,
                rpm=body.rpm,
                daily_tokens=body.daily_tokens,
            )
        )
    except InvalidKeyValue as exc:
        raise invalid_request(str(exc)) from None
    if approved is None:
        raise _gone(authorization_id)
    await audit(
        request,
        admin,
        "oauth.grant.approve",
        approved.grant_id,
        {"organisation": body.organisation, "client_id": row.client_id, "client_name": row.client_name, "key_id": approved.key_id, "scopes": body.scopes},
    )
    redirect_to = construct_redirect_uri(params["redirect_uri"], code=approved.code, state=params.get("state"), iss=params.get("issuer"))
    return {"redirect_to": redirect_to, "grant_id": approved.grant_id, "key_id": approved.key_id}


@router.post("/admin/v1/oauth/requests/{authorization_id}/deny")
async def deny_request(authorization_id: str, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    row = await anyio.to_thread.run_sync(store.deny, gateway.engine, authorization_id)
    if row is None:
        raise _gone(authorization_id)
    params = store.params_of(row)
    await audit(request, admin, "oauth.grant.deny", row.client_id)
    redirect_to = construct_redirect_uri(
        params["redirect_uri"],
        error="access_denied",
        error_description="The request was denied in the plugway console.",
        state=params.get("state"),
        iss=params.get("issuer"),
    )
    return {"redirect_to": redirect_to}


def grant_out(grant: Any) -> dict[str, Any]:
    return {
        "id": grant.id,
        "organisation": grant.organisation_id,
        "client_id": grant.client_id,
        "client_name": grant.client_name,
        "key_id": grant.key_id,
        "scopes": grant.scopes.split(),
        "resource": grant.resource,
        "approved_by": grant.approved_by,
        "created_at": store.aware(grant.created_at).isoformat(),
        "revoked_at": store.aware(grant.revoked_at).isoformat() if grant.revoked_at else None,
    }


@router.get("/admin/v1/oauth/grants")
async def list_grants(
    gateway: GatewayDep,
    admin: AdminDep,
    organisation: str | None = None,
    include_revoked: bool = Query(default=False),
) -> dict[str, Any]:
    """Applications connected by OAuth, newest first."""
    grants = await anyio.to_thread.run_sync(partial(store.list_grants, gateway.engine, organisation, include_revoked=include_revoked))
    return {"data": [grant_out(grant) for grant in grants], "next_cursor": None}


@router.delete("/admin/v1/oauth/grants/{grant_id}")
async def revoke_grant(grant_id: str, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    """End a grant: its tokens stop working (within ``key_cache_ttl_s``) and its gateway key is revoked."""
    grant = await anyio.to_thread.run_sync(store.revoke_grant, gateway.engine, grant_id)
    if grant is None:
        raise GatewayError(404, f"No grant '{grant_id}'.", code="not_found", type="invalid_request_error")
    await audit(request, admin, "oauth.grant.revoke", grant_id, {"organisation": grant.organisation_id, "key_id": grant.key_id})
    return grant_out(grant)
