"""GET and HEAD / (a reachability probe), GET /healthz (liveness) and GET /readyz (readiness), all public.

Readiness says only ready or not, for the database and Redis: an unauthenticated
caller learns nothing about hosts, commands, error text, plugins or organisations
(an unhealthy MCP server does not make the gateway unready, so it is not named).
Why a component is not ready goes to the log (URL credentials masked); MCP servers
and plugin failures are in the management API's health view.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from runtime.api.deps import GatewayDep
from runtime.gateway import Gateway
from runtime.text import mask_credentials

router = APIRouter(tags=["health"])
log = logging.getLogger("plugway.health")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    """A client's reachability probe (Claude Code sends ``HEAD /`` at start-up): 200, and where to go."""
    return _json({"status": "ok", "service": "plugway", "api": "/v1", "openapi": "/openapi.json"})


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


def _check_database(gateway: Gateway) -> None:
    with gateway.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def readiness(gateway: Gateway) -> tuple[bool, dict[str, Any]]:
    """(ready, details): details carry the reasons, for authenticated callers and logs only."""
    details: dict[str, Any] = {}
    ready = True
    try:
        await anyio.to_thread.run_sync(_check_database, gateway)
        details["database"] = {"ok": True}
    except Exception as exc:
        ready = False
        details["database"] = {"ok": False, "error": mask_credentials(f"{type(exc).__name__}: {exc}")[:300]}
    if gateway.settings.redis_url:
        ok = await gateway.limiter.ping()
        details["redis"] = {"ok": ok}
        ready = ready and ok
    if gateway.mcp is not None:
        # An unhealthy MCP server does not make the gateway unready: its tools are simply not offered.
        details["mcp"] = gateway.mcp.health()
    if gateway.plugins.failures:
        details["plugin_failures"] = dict(gateway.plugins.failures)
    return ready, details


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> Response:
    ready, details = await readiness(gateway)
    # Components only: no plugin, MCP server or organisation is named to an unauthenticated caller.
    checks: dict[str, Any] = {name: {"ok": details[name]["ok"]} for name in ("database", "redis") if name in details}
    if not ready:
        log.warning("not ready: %s", orjson.dumps(details).decode())
    return _json({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)
