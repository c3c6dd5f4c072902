"""plugway's authorization server for ``/mcp``, as the app factory plugs it in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

import anyio.to_thread
from fastapi import FastAPI
from sqlmodel import SQLModel

from runtime.api.direct import DirectRoute, ErrorResponse
from runtime.api.feature import in_background
from runtime.oauth import store
from runtime.oauth.bearer import OAuthBearer
from runtime.oauth.models import OAuthAuthorization, OAuthClient, OAuthGrant, OAuthToken
from runtime.oauth.routes import public_routes, router
from runtime.oauth.server import PlugwayAuthorizationServer

log = logging.getLogger("plugway.oauth")
PURGE_INTERVAL_S = 3600.0


class OAuthServerFeature:
    name = "oauth"
    envelopes: Mapping[str, ErrorResponse] = {}
    tables: Sequence[type[SQLModel]] = (OAuthClient, OAuthAuthorization, OAuthGrant, OAuthToken)

    def install(self, app: FastAPI) -> Sequence[DirectRoute]:
        settings = app.settings.oauth_server  # type: ignore[attr-defined]
        if not settings.enabled:
            return ()

        def engine() -> object:
            return app.state.gateway.engine

        def ttl_s() -> float:
            return float(app.state.gateway.settings.key_cache_ttl_s)

        provider = app.state.oauth_server = PlugwayAuthorizationServer(settings, engine)
        # What the /mcp door asks about a Bearer token that is not a gateway key.
        app.state.mcp_bearer = OAuthBearer(settings, engine, ttl_s=ttl_s)  # type: ignore[arg-type]
        app.router.routes.extend(public_routes(provider, settings))
        app.include_router(router)
        return ()

    def running(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        if not app.settings.oauth_server.enabled:  # type: ignore[attr-defined]
            return contextlib.nullcontext()
        return in_background(purge_forever(app))


async def purge_forever(app: FastAPI, interval_s: float = PURGE_INTERVAL_S) -> None:
    """Expired authorization requests and tokens are deleted hourly (a used refresh token is kept
    until it expires: presented again, it reveals a leak)."""
    while True:
        try:
            purged = await anyio.to_thread.run_sync(store.purge, app.state.gateway.engine)
            if purged:
                log.info("purged %d expired OAuth authorization requests and tokens", purged)
        except Exception:
            log.warning("could not purge expired OAuth records; trying again later", exc_info=True)
        await asyncio.sleep(interval_s)


FEATURE = OAuthServerFeature()
