"""Clock: the current time, time-zone conversion and date arithmetic."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runtime import ToolError, hookimpl

T = TypeVar("T")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the file system refuses
        raise ToolError(f"unknown time zone '{name[:80]}'; use an IANA name such as 'Europe/Paris'") from None


def _parse_datetime(value: str, zone: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ToolError(f"'{value[:80]}' is not an ISO 8601 date-time, e.g. 2026-11-22T14:30") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_zone(zone))


def now(timezone: str = "UTC") -> dict[str, str]:
    """Current date and time in an IANA time zone (default UTC)."""
    current = datetime.now(UTC).astimezone(_zone(timezone))
    return {
        "timezone": timezone,
        "datetime": current.isoformat(timespec="seconds"),
        "weekday": current.strftime("%A"),
        "utc_offset": current.strftime("%z"),
    }


def convert_time(datetime_iso: str, from_timezone: str, to_timezone: str) -> dict[str, str]:
    """Convert a date-time (ISO 8601) from one IANA time zone to another."""
    source = _parse_datetime(datetime_iso, from_timezone)
    zone = _zone(to_timezone)
    try:
        target = source.astimezone(zone)
    except OverflowError:  # e.g. 9999-12-31T23:59 UTC is already year 10000 in UTC+14
        raise ToolError(f"{datetime_iso[:40]} in {to_timezone} falls outside the years 1 to 9999") from None
    return {
        "from": source.isoformat(timespec="minutes"),
        "to": target.isoformat(timespec="minutes"),
        "to_timezone": to_timezone,
        "weekday": target.strftime("%A"),
    }


def date_add(start_date: str, days: int = 0, weeks: int = 0) -> dict[str, str | int]:
    """Add (or subtract, with negative numbers) days and weeks to a date (YYYY-MM-DD)."""
    try:
        start = date.fromisoformat(start_date)
    except ValueError:
        raise ToolError(f"'{start_date[:80]}' is not a date in YYYY-MM-DD form") from None
    try:
        result = start + timedelta(days=days, weeks=weeks)
    except OverflowError:
        raise ToolError("the resulting date is out of range") from None
    return {"date": result.isoformat(), "weekday": result.strftime("%A")}


def days_between(start_date: str, end_date: str) -> dict[str, int]:
    """Number of days from one date (YYYY-MM-DD) to another; negative if the end is earlier."""
    try:
        start, end = date.fromisoformat(start_date), date.fromisoformat(end_date)
    except ValueError:
        raise ToolError("dates must be in YYYY-MM-DD form") from None
    return {"days": (end - start).days}


def _on_the_loop(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Registered as a coroutine: microseconds of work (time zones are read once and cached)
    need no worker thread, whose hop cost more than the work."""

    @functools.wraps(fn)
    async def tool(**arguments: Any) -> T:
        return fn(**arguments)

    return tool


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    for tool in (now, convert_time, date_add, days_between):
        register(_on_the_loop(tool), annotations={"readOnlyHint": True, "openWorldHint": False})
