"""The audit log, newest first, paginated."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query

from runtime.api.deps import GatewayDep
from runtime.control import audit as audit_log
from runtime.control import pagination
from runtime.control.auth import AdminDep

router = APIRouter(tags=["admin: audit"])


@router.get("/admin/v1/audit")
async def read_audit(
    gateway: GatewayDep,
    admin: AdminDep,
    action: str | None = None,
    limit: int = Query(default=pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    before = pagination.decode(cursor)
    rows = await anyio.to_thread.run_sync(
        partial(audit_log.read, gateway.engine, before_id=int(before) if before is not None else None, limit=limit + 1, action=action)
    )
    return pagination.page(rows, limit, lambda row: row["id"])
