"""The detailed readiness view: what /readyz leaves out (errors, MCP commands, plugin failures)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from runtime.api.deps import GatewayDep
from runtime.api.routes.health import readiness
from runtime.control.auth import AdminDep

router = APIRouter(tags=["admin: health"])


@router.get("/admin/v1/health")
async def health(gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    ready, details = await readiness(gateway)
    return {"status": "ready" if ready else "unavailable", "checks": details}
