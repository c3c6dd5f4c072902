"""The app factory: every resource opened in the lifespan, nothing at import time.

The features it serves come from one declared list (``runtime.api.features``); it names none itself.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from runtime.api.direct import DirectRoute, DirectRoutes, ErrorResponse
from runtime.api.errors import error_response, install_error_handlers
from runtime.api.feature import Feature
from runtime.api.features import FEATURES
from runtime.api.guard import RequestGuard, forwarded_for
from runtime.api.middleware import RequestIdMiddleware
from runtime.api.openapi import install_openapi
from runtime.config import Settings, load_settings
from runtime.gateway import Gateway
from runtime.plugin_host.manager import PluginHost
from runtime.telemetry import TelemetryMiddleware, fastapi_options
from runtime.telemetry.logs import configure as configure_logging
from runtime.telemetry.routes import metrics_listener


class PlugwayApp(FastAPI):
    """FastAPI with the model routes served in front of its middleware stack (see runtime.api.direct)."""

    direct_routes: list[DirectRoute] = []
    settings: Settings
    # Path prefix -> error envelope, from the features (the request guard refuses before any route runs).
    envelopes: dict[str, ErrorResponse] = {}

    def build_middleware_stack(self) -> ASGIApp:
        served = DirectRoutes(super().build_middleware_stack(), self.direct_routes)
        guarded = RequestGuard(
            served,
            max_body_bytes=self.settings.max_body_bytes,
            body_read_timeout_s=self.settings.body_read_timeout_s,
            renderers=self.envelopes,
            default_renderer=error_response,
        )
        return forwarded_for(guarded, self.settings.trusted_proxies)


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    plugins: PluginHost | None = None,
    run_worker: bool = False,
    features: Sequence[Feature] = FEATURES,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = gateway is None
        app.state.gateway = gateway or await Gateway.create(settings, plugins=plugins)
        try:
            async with contextlib.AsyncExitStack() as running:
                await running.enter_async_context(metrics_listener(settings.metrics.listen, app.state.gateway))
                for feature in features:
                    await running.enter_async_context(feature.running(app))
                # Everything built so far lives as long as the process: keep it out of the
                # cyclic collector's full passes (they scanned it all, every few thousand requests).
                gc.collect()
                gc.freeze()
                gc.set_threshold(10_000, 20, 20)
                yield
        finally:
            if owned:
                await app.state.gateway.aclose()

    app = PlugwayApp(
        title="plugway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own HTTP server span (incoming traceparent honoured) is each request's span.
        **fastapi_options(settings.tracing.enabled),  # type: ignore[arg-type]
    )
    app.state.run_worker = run_worker
    app.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    direct: list[DirectRoute] = []
    app.envelopes = {}
    for feature in features:
        direct.extend(feature.install(app))
        app.envelopes.update(feature.envelopes)
    # With tracing on, FastAPI's native server span (named by the route it matched) is each
    # request's span, so every request takes FastAPI's own path.
    app.direct_routes = [] if settings.tracing.enabled else direct
    # Inside RequestIdMiddleware: the request id is known, and final, when the request ends.
    app.add_middleware(TelemetryMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: config from PLUGWAY_CONFIG."""
    settings = load_settings(os.environ.get("PLUGWAY_CONFIG") or None)
    # A spawned worker process inherits no logging set-up from `plugway serve`.
    configure_logging(settings.logging)
    return create_app(settings, run_worker=os.environ.get("PLUGWAY_RUN_WORKER") == "1")
