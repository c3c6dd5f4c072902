"""WhatsApp, as the app factory plugs it in: Meta's webhook, the management API's conversations
and dead letters, and the reply worker when the process runs one (``plugway serve``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runtime.api.feature import RouterFeature
from workers.whatsapp import admin_routes, webhook
from workers.whatsapp.metrics import queue_gauges
from workers.whatsapp.models import WaInbound, WaOutbound, WaStatusEvent


@asynccontextmanager
async def _running(app: FastAPI) -> AsyncIterator[None]:
    gateway = app.state.gateway
    apps = [whatsapp_app.id for whatsapp_app in gateway.settings.whatsapp.apps]
    remove_gauges = gateway.telemetry.add_state_sampler(queue_gauges(gateway.engine, apps)) if apps else None
    app.state.whatsapp_worker = None
    if getattr(app.state, "run_worker", False) and app.state.gateway.settings.whatsapp.apps:
        from workers.whatsapp.worker import WhatsAppWorker

        app.state.whatsapp_worker = WhatsAppWorker(app.state.gateway)
        await app.state.whatsapp_worker.start()
    try:
        yield
    finally:
        if app.state.whatsapp_worker is not None:
            await app.state.whatsapp_worker.stop()
        if remove_gauges is not None:
            remove_gauges()


FEATURE = RouterFeature(
    "whatsapp", (webhook.router, admin_routes.router), lifespan=_running, tables=(WaInbound, WaOutbound, WaStatusEvent)
)
