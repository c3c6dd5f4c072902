"""GET /v1/models, /healthz, /readyz."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from runtime.api.deps import GatewayDep, KeyDep
from runtime.gateway import Gateway

router = APIRouter()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("/v1/models")
async def list_models(gateway: GatewayDep, key: KeyDep) -> Response:
    organisation = gateway.organisation(key.organisation_id)
    models = gateway.models_for(organisation) if organisation else []
    return _json(
        {
            "object": "list",
            "data": [{"id": m.id, "object": "model", "created": 0, "owned_by": m.provider} for m in models],
        }
    )


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


def _check_database(gateway: Gateway) -> None:
    with gateway.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> Response:
    checks: dict[str, Any] = {}
    ready = True
    try:
        await anyio.to_thread.run_sync(_check_database, gateway)
        checks["database"] = {"ok": True}
    except Exception as exc:
        ready = False
        checks["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    if gateway.settings.redis_url:
        ok = await gateway.limiter.ping()
        checks["redis"] = {"ok": ok}
        ready = ready and ok
    if gateway.mcp is not None:
        # An unhealthy MCP server does not make the gateway unready: its tools are simply not offered.
        checks["mcp"] = gateway.mcp.health()
    if gateway.plugins.failures:
        checks["plugin_failures"] = gateway.plugins.failures
    return _json({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)
