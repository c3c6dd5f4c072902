"""The request log: every request, newest first, filtered and paginated; one request with its trace."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query

from runtime.api.deps import GatewayDep
from runtime.billing import parse_moment
from runtime.control import pagination
from runtime.control.auth import AdminDep
from runtime.errors import GatewayError, invalid_request
from runtime.gateway import Gateway
from runtime.requestlog.store import BadFilter, RequestFilters, read_one, read_page

router = APIRouter(tags=["admin: requests"])


async def _written(gateway: Gateway) -> None:
    # This process's latest requests show at once, not after the next periodic write.
    writer = gateway.telemetry.request_log
    if writer is not None:
        try:
            await writer.flush()
        except Exception:  # the database may be down: the list then lags, it does not fail
            pass


@router.get("/admin/v1/requests")
async def list_requests(
    gateway: GatewayDep,
    admin: AdminDep,
    organisation: Annotated[str | None, Query(description="Only this organisation's requests.")] = None,
    key: Annotated[str | None, Query(description="Only this gateway key's requests (its id).")] = None,
    model: Annotated[str | None, Query(description="Only requests for (or served by) this model.")] = None,
    route: Annotated[str | None, Query(description="Only this route (its template, such as /v1/chat/completions).")] = None,
    status: Annotated[str | None, Query(description="An HTTP status (429), a class (4xx, 5xx), or 'error' (400 and above).")] = None,
    tool: Annotated[str | None, Query(description="Only requests that called this tool (the name the model sees).")] = None,
    error: Annotated[str | None, Query(description="Text in the error code or message, in any case.")] = None,
    start: Annotated[str | None, Query(description="From this moment (ISO 8601 or YYYY-MM-DD, UTC), inclusive.")] = None,
    end: Annotated[str | None, Query(description="Until this moment, exclusive.")] = None,
    limit: int = Query(default=pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    before = pagination.decode(cursor)
    if before is not None and not isinstance(before, int):
        raise invalid_request("This cursor is not one the API gave out.", param="cursor")
    filters = RequestFilters(
        organisation=organisation,
        key=key,
        model=model,
        route=route,
        status=status,
        tool=tool,
        error=error,
        start=parse_moment(start, param="start") if start else None,
        end=parse_moment(end, param="end") if end else None,
    )
    await _written(gateway)
    try:
        rows = await anyio.to_thread.run_sync(partial(read_page, gateway.engine, filters, before_id=before, limit=limit + 1))
    except BadFilter as exc:
        raise invalid_request(str(exc), param=exc.param) from None
    return pagination.page(rows, limit, lambda row: row["id"])


@router.get("/admin/v1/requests/{id}")
async def read_request(
    request: Annotated[str, Path(alias="id", description="The log's id, or the request id a client got in X-Request-Id.")],
    gateway: GatewayDep,
    admin: AdminDep,
) -> dict[str, Any]:
    """One request by its log id, or by its request id (``X-Request-Id``): its timeline and any captured bodies."""
    await _written(gateway)
    entry_id = int(request) if request.isdigit() and len(request) < 19 else None
    entry = await anyio.to_thread.run_sync(read_one, gateway.engine, entry_id, None if entry_id is not None else request)
    if entry is None:
        raise GatewayError(404, f"No request '{request}' in the request log.", code="not_found", type="invalid_request_error")
    return entry
