"""Endpoints: named assistants per organisation (model, prompt, plugins, sessions, guardrails, schemas).

A feature plugged into the app factory: its routes, its session table, its
service (``app.state.endpoints``), a periodic purge of expired sessions, and
the ``plugway endpoints`` commands.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio.to_thread

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.endpoints.pipeline import EndpointError, EndpointService
    from runtime.endpoints.routes import router
    from runtime.endpoints.sessions import EndpointSession

__all__ = ["EndpointError", "EndpointService", "EndpointSession", "purge_expired_sessions", "router"]
__getattr__ = lazy_exports(
    __name__,
    {
        "EndpointError": "runtime.endpoints.pipeline",
        "EndpointService": "runtime.endpoints.pipeline",
        "router": "runtime.endpoints.routes",
        "EndpointSession": "runtime.endpoints.sessions",
    },
)
log = logging.getLogger("plugway.endpoints")


async def purge_expired_sessions(service: EndpointService, *, interval_s: float = 3600.0) -> None:
    from runtime.endpoints.sessions import purge_expired

    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge_expired, service.gateway.engine)
            if removed:
                log.info("purged %d expired endpoint sessions", removed)
        except Exception:
            log.warning("purging expired endpoint sessions failed", exc_info=True)
        await asyncio.sleep(interval_s)
