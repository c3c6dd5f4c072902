"""Authorizing plugins' MCP servers that need OAuth: the management API and the gateway's two public pages.

- ``GET/POST/DELETE /admin/v1/plugins/{organisation}/{plugin}/authorization``: who has
  authorized (never a token), start an authorization (the URL to send the admin's
  browser to), forget one or all of them;
- ``GET /oauth/upstream/callback``: the redirect URI registered with every authorization
  server; it exchanges the code and stores the token, then returns to the console or
  says the account is connected;
- ``GET /oauth/upstream/authorize?ticket=…``: the link an end user gets in a tool result;
  it sends them to the authorization server to connect their own account.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import HTMLResponse, RedirectResponse, Response

from runtime.api.deps import GatewayDep
from runtime.config import OrganisationConfig, PluginRef
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.errors import GatewayError
from runtime.gateway import Gateway
from runtime.mcp.oauth import UpstreamAuth
from runtime.mcp.oauth.client import OAuthError
from runtime.mcp.oauth.service import CALLBACK_PATH, LINK_PATH

router = APIRouter(tags=["admin: plugins"])
# The pages a browser reaches outside /admin/v1: no admin key, the state or the sealed ticket is the proof.
public_router = APIRouter(include_in_schema=False)

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class StartAuthorization(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where the admin's browser lands once the authorization server sent it back: a console path.
    return_to: str | None = Field(default=None, max_length=500)


def _not_found(message: str) -> GatewayError:
    return GatewayError(404, message, code="not_found", type="invalid_request_error")


def _bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code=code, type="invalid_request_error")


def _oauth_plugin(gateway: Gateway, organisation_id: str, plugin_id: str) -> tuple[OrganisationConfig, PluginRef, UpstreamAuth]:
    organisation = gateway.organisation(organisation_id)
    if organisation is None:
        raise _not_found(f"Organisation '{organisation_id}' is not configured.")
    ref = organisation.plugin(plugin_id)
    if ref is None:
        raise _not_found(f"Plugin '{plugin_id}' is not configured for organisation '{organisation_id}'.")
    if ref.mcp is None or ref.mcp.auth is None:
        raise _bad_request(f"Plugin '{plugin_id}' is not an MCP server with 'auth': there is nothing to authorize.", "not_oauth")
    auth = getattr(gateway.mcp, "upstream_auth", None)
    if auth is None:
        raise GatewayError(503, "The gateway's MCP client is not running.", code="unavailable", type="server_error")
    return organisation, ref, auth


def authorization_summary(ref: PluginRef, authorizations: list[dict[str, Any]]) -> dict[str, Any]:
    assert ref.mcp is not None and ref.mcp.auth is not None
    auth = ref.mcp.auth
    organisation_grant = next((a for a in authorizations if a["subject"] is None), None)
    return {
        "type": auth.type,
        "per_user": auth.per_user,
        "authorized": auth.type == "client_credentials" or (organisation_grant is not None if not auth.per_user else bool(authorizations)),
        "organisation_authorization": organisation_grant,
        "users": len([a for a in authorizations if a["subject"] is not None]),
        "authorizations": authorizations,
    }


@router.get("/admin/v1/plugins/{organisation_id}/{plugin_id}/authorization")
async def get_authorization(organisation_id: str, plugin_id: str, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    """Who has authorized this MCP server, since when, until when: never a token."""
    _organisation, ref, auth = _oauth_plugin(gateway, organisation_id, plugin_id)
    found = await auth.authorizations(organisation_id, ref)
    return {"organisation": organisation_id, "plugin": plugin_id, **authorization_summary(ref, found)}


@router.post("/admin/v1/plugins/{organisation_id}/{plugin_id}/authorization")
async def start_authorization(
    organisation_id: str, plugin_id: str, body: StartAuthorization, request: Request, gateway: GatewayDep, admin: AdminDep
) -> dict[str, Any]:
    """Begin the organisation's authorization: open ``authorize_url`` in the admin's browser."""
    _organisation, ref, auth = _oauth_plugin(gateway, organisation_id, plugin_id)
    assert ref.mcp is not None and ref.mcp.auth is not None
    if ref.mcp.auth.type != "oauth":
        raise _bad_request(f"Plugin '{plugin_id}' uses client credentials: plugway fetches its token itself.", "not_oauth")
    if ref.mcp.auth.per_user:
        raise _bad_request(
            f"Plugin '{plugin_id}' is authorized by each end user (per_user): they get a link when they first use it.",
            "per_user",
        )
    return_to = body.return_to
    if return_to is not None and not (return_to.startswith("/console") and "//" not in return_to and "\\" not in return_to):
        raise _bad_request("'return_to' must be a console path (/console/...).")
    try:
        url = await auth.start(
            organisation_id, ref, base_url=str(request.base_url), return_to=return_to, created_by=admin.actor
        )
    except OAuthError as exc:
        raise GatewayError(502, f"Cannot start the authorization: {exc}", code="upstream_oauth_error", type="upstream_error") from None
    await audit(request, admin, "mcp.authorize", f"{organisation_id}/{plugin_id}")
    return {"authorize_url": url, "redirect_uri": auth.redirect_uri(str(request.base_url))}


@router.delete("/admin/v1/plugins/{organisation_id}/{plugin_id}/authorization")
async def forget_authorization(
    organisation_id: str, plugin_id: str, request: Request, gateway: GatewayDep, admin: AdminDep, subject: str | None = None, all_users: bool = False
) -> dict[str, Any]:
    """Forget the organisation's token, one end user's (``subject``), or every one (``all_users=true``)."""
    _organisation, ref, auth = _oauth_plugin(gateway, organisation_id, plugin_id)
    who: str | None = None if all_users else (subject or "")
    removed = await auth.forget(organisation_id, ref, subject=who)
    await audit(request, admin, "mcp.authorization.delete", f"{organisation_id}/{plugin_id}", {"subject": who, "removed": removed})
    return {"removed": removed}


def _page(title: str, message: str, *, status_code: int = 200) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>" + html.escape(title) + "</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem'>"
        f"<h1>{html.escape(title)}</h1><p id=message>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers=_PAGE_HEADERS)


def _auth_of(gateway: Gateway) -> UpstreamAuth | None:
    auth: UpstreamAuth | None = getattr(gateway.mcp, "upstream_auth", None)
    return auth


@public_router.get(CALLBACK_PATH)
async def callback(
    gateway: GatewayDep,
    state: str | None = None,
    code: str | None = None,
    iss: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    auth = _auth_of(gateway)
    if auth is None:
        return _page("Not available", "This gateway has no MCP server that uses OAuth.", status_code=404)
    if error is not None:
        if state:
            await auth.discard(state)  # the attempt is over: its state must not be usable later
        reason = error + (f": {error_description}" if error_description else "")
        return _page("Authorization not completed", f"The authorization server answered: {reason}", status_code=400)
    if not state or not code:
        return _page("Authorization not completed", "This page expects 'state' and 'code' from the authorization server.", status_code=400)
    try:
        grant = await auth.complete(state=state, code=code, issuer=iss)
    except OAuthError as exc:
        return _page("Authorization not completed", str(exc), status_code=400)
    if grant.return_to:
        separator = "&" if "?" in grant.return_to else "?"
        return RedirectResponse(f"{grant.return_to}{separator}authorized={grant.plugin_id}", status_code=303)
    who = "your account" if grant.subject else f"organisation {grant.organisation_id}"
    return _page("Connected", f"{grant.plugin_id} is now connected for {who}. You can close this window.")


@public_router.get(LINK_PATH)
async def user_link(request: Request, gateway: GatewayDep, ticket: str | None = None) -> Response:
    auth = _auth_of(gateway)
    if auth is None or not ticket:
        return _page("Link not valid", "This authorization link is not valid.", status_code=404)
    try:
        organisation_id, plugin_id, subject = auth.open_link(ticket)
        organisation = gateway.organisation(organisation_id)
        ref = organisation.plugin(plugin_id) if organisation is not None else None
        if ref is None or ref.mcp is None or ref.mcp.auth is None or not ref.mcp.auth.per_user:
            return _page("Link not valid", "This plugin is no longer authorized per user.", status_code=404)
        url = await auth.start(organisation_id, ref, subject=subject, base_url=str(request.base_url))
    except OAuthError as exc:
        return _page("Link not valid", str(exc), status_code=400)
    return RedirectResponse(url, status_code=302)
