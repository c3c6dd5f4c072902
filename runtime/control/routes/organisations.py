"""Organisations as configured: models, plugins with live health, endpoints, budget, spend this period."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from runtime.api.deps import GatewayDep
from runtime.billing import month_bounds, spend_between
from runtime.config import OrganisationConfig
from runtime.control.auth import AdminDep
from runtime.endpoints import EndpointService
from runtime.errors import GatewayError
from runtime.gateway import Gateway

router = APIRouter(tags=["admin: organisations"])


def plugin_summary(gateway: Gateway, organisation_id: str, ref: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": ref.id, "kind": "mcp" if ref.mcp is not None else "python"}
    if ref.mcp is not None:
        health = (
            gateway.mcp.connection_health(ref, organisation=organisation_id)
            if gateway.mcp is not None
            else {"healthy": False, "state": "closed"}
        )
        entry["health"] = {
            "healthy": health.get("healthy"),
            "state": health.get("state"),
            "error": health.get("error"),
            "last_error": health.get("last_error"),
            "last_error_at": health.get("last_error_at"),
        }
    else:
        loaded = gateway.plugins.plugins.get(ref.id)
        entry["origin"] = loaded.origin if loaded else None
        entry["health"] = {"healthy": loaded is not None, "state": "loaded" if loaded else "failed", "error": gateway.plugins.failures.get(ref.id)}
    return entry


async def summary(request: Request, gateway: Gateway, organisation: OrganisationConfig) -> dict[str, Any]:
    service: EndpointService = request.app.state.endpoints
    start, end = month_bounds(datetime.now(UTC))
    spent = await gateway.budget.month_spend(organisation.id)
    return {
        "id": organisation.id,
        "models": [m.id for m in gateway.models_for(organisation)],
        "plugins": [plugin_summary(gateway, organisation.id, ref) for ref in organisation.plugins],
        "endpoints": [
            {"slug": item.endpoint.slug, "model": item.endpoint.model, "active": item.endpoint.active, "source": item.source}
            for item in await service.registry.listing(organisation.id)
        ],
        "guardrails": [g.key for g in getattr(organisation, "guardrails", [])],
        "monthly_budget_usd": organisation.monthly_budget_usd,
        "spend_this_period_usd": round(spent, 10),
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
    }


@router.get("/admin/v1/organisations")
async def list_organisations(request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    return {"data": [await summary(request, gateway, org) for org in gateway.settings.organisations], "next_cursor": None}


@router.get("/admin/v1/organisations/{organisation_id}")
async def get_organisation(organisation_id: str, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    organisation = gateway.organisation(organisation_id)
    if organisation is None:
        raise GatewayError(404, f"Organisation '{organisation_id}' is not configured.", code="not_found", type="invalid_request_error")
    result = await summary(request, gateway, organisation)
    start, end = month_bounds(datetime.now(UTC))
    result["spend_database_usd"] = await anyio.to_thread.run_sync(partial(spend_between, gateway.engine, organisation_id, start, end))
    return result
