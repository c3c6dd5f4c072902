"""GET /v1/usage: the calling key's organisation, over a period (the current UTC month by default)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from runtime.api.deps import GatewayDep, KeyDep
from runtime.billing import month_bounds, spend_between, usage_period, usage_summary
from runtime.errors import invalid_request

router = APIRouter()
log = logging.getLogger("plugway.usage")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@router.get("/v1/usage")
async def get_usage(request: Request, gateway: GatewayDep, key: KeyDep) -> Response:
    unknown = sorted(set(request.query_params) - {"start", "end"})
    if unknown:
        raise invalid_request(f"Unknown query parameter '{unknown[0]}'; use 'start' and 'end'.", param=unknown[0])
    now = datetime.now(UTC)
    start, end = usage_period(request.query_params.get("start"), request.query_params.get("end"), now=now)
    try:
        # This process's own requests count at once, not after the next periodic flush.
        await gateway.usage.flush()
    except Exception:
        log.warning("usage flush before GET /v1/usage failed; totals may lag", exc_info=True)
    organisation_id = key.organisation_id
    summary = await anyio.to_thread.run_sync(usage_summary, gateway.engine, organisation_id, start, end)
    payload = {
        "object": "usage",
        "organisation": organisation_id,
        "period_start": _iso(start),
        "period_end": _iso(end),
        **summary,
    }
    organisation = gateway.organisation(organisation_id)
    budget = organisation.monthly_budget_usd if organisation else None
    if budget is not None:
        month_start, month_end = month_bounds(now)
        if (start, end) == (month_start, month_end):
            month_spend = summary["total_cost_usd"]
        else:
            month_spend = await anyio.to_thread.run_sync(
                spend_between, gateway.engine, organisation_id, month_start, month_end
            )
        payload["monthly_budget_usd"] = budget
        payload["credit_remaining_usd"] = round(max(budget - month_spend, 0.0), 10)
        payload["credit_period_end"] = _iso(month_end)
    return Response(orjson.dumps(payload), media_type="application/json")
