"""Usage: totals and series by organisation, key, model, endpoint or day, as JSON or CSV.

Filters combine with any grouping: ``group_by=day&key=key_…`` is one key's
daily series, ``group_by=model&endpoint=support`` what one endpoint spent on
each model.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import APIRouter, Query
from sqlalchemy import Engine, case, func, select
from sqlmodel import col
from starlette.responses import Response

from runtime.api.deps import GatewayDep
from runtime.billing import usage_period
from runtime.control.auth import AdminDep
from runtime.storage.models import UsageRecord

router = APIRouter(tags=["admin: usage"])
GroupBy = Literal["day", "model", "key", "endpoint", "organisation", "source"]
COLUMNS = ("group", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")


def _group(engine: Engine, group_by: str) -> Any:
    created = col(UsageRecord.created_at)
    if group_by == "day":
        if engine.dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", created), "YYYY-MM-DD")
        return func.strftime("%Y-%m-%d", created)
    return {
        "model": col(UsageRecord.model),
        "key": col(UsageRecord.key_id),
        "endpoint": col(UsageRecord.endpoint),
        "organisation": col(UsageRecord.organisation_id),
        "source": col(UsageRecord.source),
    }[group_by]


# Query parameter -> the column it filters.
FILTERS = {
    "organisation": col(UsageRecord.organisation_id),
    "key": col(UsageRecord.key_id),
    "model": col(UsageRecord.model),
    "endpoint": col(UsageRecord.endpoint),
    "source": col(UsageRecord.source),
}


def summarise(
    engine: Engine, *, group_by: str, start: datetime, end: datetime, filters: dict[str, str | None]
) -> list[dict[str, Any]]:
    """Usage in [start, end) grouped by ``group_by``, narrowed by each filter given (see FILTERS)."""
    group = _group(engine, group_by).label("grp")
    query = (
        select(
            group,
            func.count(),
            func.sum(case((col(UsageRecord.status) != "ok", 1), else_=0)),
            func.sum(col(UsageRecord.prompt_tokens)),
            func.sum(col(UsageRecord.completion_tokens)),
            func.sum(col(UsageRecord.total_tokens)),
            func.sum(col(UsageRecord.cost_usd)),
        )
        .where(col(UsageRecord.created_at) >= start, col(UsageRecord.created_at) < end)
        .group_by(group)
        .order_by(group)
    )
    for name, value in filters.items():
        if value:
            query = query.where(FILTERS[name] == value)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {
            "group": grp,
            "requests": int(requests),
            "errors": int(errors or 0),
            "prompt_tokens": int(prompt or 0),
            "completion_tokens": int(completion or 0),
            "total_tokens": int(total or 0),
            "cost_usd": round(float(cost or 0.0), 10),
        }
        for grp, requests, errors, prompt, completion, total, cost in rows
    ]


@router.get("/admin/v1/usage", response_model=None)
async def usage(
    gateway: GatewayDep,
    admin: AdminDep,
    organisation: str | None = None,
    group_by: GroupBy = "day",
    start: str | None = None,
    end: str | None = None,
    format: Literal["json", "csv"] = "json",
    key: Annotated[str | None, Query(description="Only this gateway key's requests (its id).")] = None,
    model: Annotated[str | None, Query(description="Only requests for this model.")] = None,
    endpoint: Annotated[str | None, Query(description="Only this endpoint's requests (its slug).")] = None,
    source: Annotated[str | None, Query(description="Only requests from this source (api, responses, messages, whatsapp, mcp, mcp-sampling, …).")] = None,
) -> Response:
    period_start, period_end = usage_period(start, end, now=datetime.now(UTC))
    filters = {name: value for name, value in (("key", key), ("model", model), ("endpoint", endpoint), ("source", source)) if value}
    try:
        # This process's own requests count at once, not after the next periodic flush.
        await gateway.usage.flush()
    except Exception:  # the database may be down: the figures then lag, they do not fail
        pass
    data = await anyio.to_thread.run_sync(
        partial(
            summarise,
            gateway.engine,
            group_by=group_by,
            start=period_start,
            end=period_end,
            filters={**filters, "organisation": organisation},
        )
    )
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for row in data:
            writer.writerow([row[c] if row[c] is not None else "" for c in COLUMNS])
        filename = f"plugway-usage-{group_by}-{period_start:%Y%m%d}-{period_end:%Y%m%d}.csv"
        return Response(buffer.getvalue(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    totals = {name: sum(row[name] for row in data) for name in COLUMNS[1:]}
    totals["cost_usd"] = round(totals["cost_usd"], 10)
    payload = {
        "data": data,
        "totals": totals,
        "group_by": group_by,
        "organisation": organisation,
        "filters": filters,
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
    }
    return Response(orjson.dumps(payload), media_type="application/json")
