"""The app factory: every resource opened in the lifespan, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from runtime.api import routes_whatsapp
from runtime.api.direct import DirectRoute, DirectRoutes
from runtime.api.errors import error_response, install_error_handlers
from runtime.api.guard import RequestGuard, forwarded_for
from runtime.api.middleware import RequestIdMiddleware
from runtime.api.openapi import install_openapi
from runtime.api.routes import health, models, usage
from runtime.config import Settings, load_settings
from runtime.console import router as console_router
from runtime.control import router as control_router
from runtime.endpoints import EndpointService, purge_expired_sessions
from runtime.endpoints import router as endpoints_router
from runtime.frontdoors import chat, embeddings, messages, responses
from runtime.frontdoors.mcp import McpFrontDoor
from runtime.frontdoors.mcp.routes import jsonrpc_error_response
from runtime.frontdoors.messages.routes import error_response as anthropic_error_response
from runtime.gateway import Gateway
from runtime.plugin_host.manager import PluginHost
from runtime.requestlog.store import purge_forever as purge_request_log
from runtime.telemetry import TelemetryMiddleware, fastapi_options
from runtime.telemetry import routes as telemetry_routes
from runtime.telemetry.logs import configure as configure_logging
from runtime.telemetry.routes import metrics_listener


class PlugwayApp(FastAPI):
    """FastAPI with the model routes served in front of its middleware stack (see runtime.api.direct)."""

    direct_routes: list[DirectRoute] = []
    settings: Settings

    def build_middleware_stack(self) -> ASGIApp:
        served = DirectRoutes(super().build_middleware_stack(), self.direct_routes)
        guarded = RequestGuard(
            served,
            max_body_bytes=self.settings.max_body_bytes,
            body_read_timeout_s=self.settings.body_read_timeout_s,
            renderers={"/v1/messages": anthropic_error_response, "/mcp": jsonrpc_error_response},
            default_renderer=error_response,
        )
        return forwarded_for(guarded, self.settings.trusted_proxies)


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    plugins: PluginHost | None = None,
    run_worker: bool = False,
) -> FastAPI:
    mcp_front_door = McpFrontDoor()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = gateway is None
        app.state.gateway = gateway or await Gateway.create(settings, plugins=plugins)
        app.state.whatsapp_worker = None
        if run_worker and settings.whatsapp.apps:
            from workers.whatsapp.worker import WhatsAppWorker

            app.state.whatsapp_worker = WhatsAppWorker(app.state.gateway)
            await app.state.whatsapp_worker.start()
        app.state.endpoints = EndpointService(app.state.gateway)
        maintenance = asyncio.gather(
            responses.purge_expired(app.state.gateway),
            purge_expired_sessions(app.state.endpoints),
            purge_request_log(app.state.gateway),
        )
        try:
            async with mcp_front_door.serving(app.state.gateway), metrics_listener(settings.metrics.listen, app.state.gateway):
                # Everything built so far lives as long as the process: keep it out of the
                # cyclic collector's full passes (they scanned it all, every few thousand requests).
                gc.collect()
                gc.freeze()
                gc.set_threshold(10_000, 20, 20)
                yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            if app.state.whatsapp_worker is not None:
                await app.state.whatsapp_worker.stop()
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
    app.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(chat.router)
    app.include_router(responses.router)
    app.include_router(messages.router)
    app.include_router(endpoints_router)
    app.include_router(control_router)
    app.include_router(console_router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(usage.router)
    app.include_router(routes_whatsapp.router)
    app.include_router(embeddings.router)
    app.include_router(telemetry_routes.router)
    app.router.routes.append(mcp_front_door.route())
    # With tracing on, FastAPI's native server span (named by the route it matched) is each
    # request's span, so every request takes FastAPI's own path.
    app.direct_routes = [] if settings.tracing.enabled else [
        DirectRoute.post(chat.router, "/v1/chat/completions", error_response),
        DirectRoute.post(responses.router, "/v1/responses", error_response),
        DirectRoute.post(messages.router, "/v1/messages", anthropic_error_response),
    ]
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
