"""plugway's authorization server for ``/mcp``, as the app factory plugs it in."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from runtime.api.direct import DirectRoute, ErrorResponse
from runtime.oauth.bearer import OAuthBearer
from runtime.oauth.routes import admin_router, public_routes
from runtime.oauth.server import PlugwayAuthorizationServer


class OAuthServerFeature:
    name = "oauth"
    envelopes: Mapping[str, ErrorResponse] = {}

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
        app.include_router(admin_router)
        return ()

    def running(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


FEATURE = OAuthServerFeature()
