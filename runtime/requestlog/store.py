"""Reading the request log (newest first, filtered, by cursor) and deleting what is past its retention.

Synchronous: call these from a worker thread, never on the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, or_, select
from sqlmodel import SQLModel

from runtime.config import RequestLogConfig, Settings
from runtime.requestlog import models  # noqa: F401  (registers the tables)

ENTRIES = SQLModel.metadata.tables["request_log"]
BODIES = SQLModel.metadata.tables["request_log_bodies"]
# ``status`` takes a code (429), a class (4xx) or ``error`` (400 and above).
_STATUS_CLASS = re.compile(r"^([1-5])xx$")


class BadFilter(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class RequestFilters:
    organisation: str | None = None
    key: str | None = None
    model: str | None = None
    route: str | None = None
    status: str | None = None
    tool: str | None = None
    error: str | None = None  # text in the error code or message, any case
    start: datetime | None = None
    end: datetime | None = None


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _status_condition(status: str) -> Any:
    column = ENTRIES.c.status
    text = status.strip().lower()
    if text == "error":
        return column >= 400
    if text == "ok":
        return column < 400
    matched = _STATUS_CLASS.match(text)
    if matched:
        low = int(matched.group(1)) * 100
        return (column >= low) & (column < low + 100)
    if text.isdigit():
        return column == int(text)
    raise BadFilter("status", "status takes an HTTP status (429), a class (4xx) or 'error'.")


def _conditions(filters: RequestFilters) -> list[Any]:
    c = ENTRIES.c
    conditions: list[Any] = []
    if filters.organisation:
        conditions.append(c.organisation_id == filters.organisation)
    if filters.key:
        conditions.append(c.key_id == filters.key)
    if filters.model:
        conditions.append(or_(c.model == filters.model, c.served_model == filters.model))
    if filters.route:
        conditions.append(c.route == filters.route)
    if filters.status:
        conditions.append(_status_condition(filters.status))
    if filters.tool:
        conditions.append(c.tools.like(f"%,{_like_escaped(filters.tool)},%", escape="\\"))
    if filters.error:
        pattern = f"%{_like_escaped(filters.error.lower())}%"
        conditions.append(
            or_(func.lower(c.error_code).like(pattern, escape="\\"), func.lower(c.error_message).like(pattern, escape="\\"))
        )
    if filters.start is not None:
        conditions.append(c.at >= filters.start)
    if filters.end is not None:
        conditions.append(c.at < filters.end)
    return conditions


def _entry(row: Any) -> dict[str, Any]:
    tools = row["tools"]
    return {
        "id": row["id"],
        "at": _aware(row["at"]).isoformat(),
        "request_id": row["request_id"],
        "route": row["route"],
        "method": row["method"],
        "organisation": row["organisation_id"],
        "key_id": row["key_id"],
        "endpoint": row["endpoint"],
        "source": row["source"],
        "model": row["model"],
        "served_model": row["served_model"],
        "provider": row["provider"],
        "status": row["status"],
        "error_code": row["error_code"],
        "error_message": row["error_message"],
        "latency_ms": row["latency_ms"],
        "ttfb_ms": row["ttfb_ms"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost_usd": round(row["cost_usd"] or 0.0, 10),
        "rounds": row["rounds"],
        "tool_calls": row["tool_calls"],
        "tools": [name for name in tools.split(",") if name] if tools else [],
    }


def read_page(engine: Engine, filters: RequestFilters, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
    """Entries matching ``filters``, newest first, with ids below ``before_id``; at most ``limit``."""
    query = select(*(column for column in ENTRIES.c if column.name != "trace")).order_by(ENTRIES.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(ENTRIES.c.id < before_id)
    for condition in _conditions(filters):
        query = query.where(condition)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [_entry(row) for row in rows]


def _timeline(trace: str | None) -> dict[str, Any]:
    steps = orjson.loads(trace) if trace else []
    return {
        "rounds": [step for step in steps if step["kind"] == "round"],
        "tool_calls": [step for step in steps if step["kind"] == "tool"],
    }


def read_one(engine: Engine, entry_id: int | None, request_id: str | None) -> dict[str, Any] | None:
    """One entry by its id (or the latest with this request id), with its trace and any captured bodies."""
    query = select(ENTRIES)
    if entry_id is not None:
        query = query.where(ENTRIES.c.id == entry_id)
    else:
        query = query.where(ENTRIES.c.request_id == request_id).order_by(ENTRIES.c.id.desc()).limit(1)
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
        if row is None:
            return None
        bodies = connection.execute(select(BODIES).where(BODIES.c.entry_id == row["id"])).mappings().first()
    entry = _entry(row)
    entry["trace"] = _timeline(row["trace"])
    entry["bodies"] = None
    if bodies is not None:
        entry["bodies"] = {
            "request": orjson.loads(bodies["request"]) if bodies["request"] else None,
            "response": orjson.loads(bodies["response"]) if bodies["response"] else None,
        }
    return entry


def purge_expired(engine: Engine, settings: Settings, *, now: datetime | None = None) -> int:
    """Delete entries (and bodies) older than their organisation's ``request_log.retention_days``.

    Entries of no configured organisation (refused before a key was known, or
    of an organisation since removed) keep the default retention.
    """
    now = now or datetime.now(UTC)
    configured = {org.id: org.request_log.retention_days for org in settings.organisations}
    removed = 0
    with engine.begin() as connection:
        for organisation_id, days in configured.items():
            cutoff = now - timedelta(days=days)
            connection.execute(delete(BODIES).where(BODIES.c.organisation_id == organisation_id, BODIES.c.at < cutoff))
            result = connection.execute(delete(ENTRIES).where(ENTRIES.c.organisation_id == organisation_id, ENTRIES.c.at < cutoff))
            removed += int(result.rowcount or 0)
        cutoff = now - timedelta(days=RequestLogConfig().retention_days)
        others = or_(ENTRIES.c.organisation_id.is_(None), ENTRIES.c.organisation_id.not_in(list(configured)))
        connection.execute(delete(BODIES).where(BODIES.c.organisation_id.not_in(list(configured)), BODIES.c.at < cutoff))
        result = connection.execute(delete(ENTRIES).where(others, ENTRIES.c.at < cutoff))
        removed += int(result.rowcount or 0)
    return removed


async def purge_forever(gateway: Any, *, interval_s: float = 3600.0) -> None:
    """The maintenance loop: purge the request log now and then."""
    import asyncio
    import logging

    import anyio.to_thread

    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge_expired, gateway.engine, gateway.settings)
            if removed:
                logging.getLogger("plugway.requestlog").info("purged %d request log entries past their retention", removed)
        except Exception:
            logging.getLogger("plugway.requestlog").warning("purging the request log failed", exc_info=True)
        await asyncio.sleep(interval_s)
