"""An example third-party plugway plugin, written only against the public API.

The forecast is synthetic and deterministic (a hash of city and date), so the
example works offline; a real plugin would call a weather service here.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

from runtime import ToolContext, ToolError, hookimpl

CONDITIONS = ["sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy", "foggy", "snow"]
MAX_DAYS = 7


def _day(city: str, day: date, units: str) -> dict[str, object]:
    digest = hashlib.sha256(f"{city.lower()}|{day.isoformat()}".encode()).digest()
    high_c = -5 + digest[0] % 35
    low_c = high_c - 3 - digest[1] % 8
    condition = CONDITIONS[digest[2] % len(CONDITIONS)]
    if units == "imperial":
        high, low = round(high_c * 9 / 5 + 32), round(low_c * 9 / 5 + 32)
    else:
        high, low = high_c, low_c
    return {"date": day.isoformat(), "condition": condition, "high": high, "low": low}


async def get_forecast(city: str, days: int = 1, *, ctx: ToolContext) -> dict[str, object]:
    """Weather forecast for a city, for 1 to 7 days starting today."""
    if not city.strip():
        raise ToolError("city must not be empty")
    if not 1 <= days <= MAX_DAYS:
        raise ToolError(f"days must be between 1 and {MAX_DAYS}")
    units = str(ctx.config.get("units", "metric"))
    if units not in ("metric", "imperial"):
        raise ToolError("units must be 'metric' or 'imperial'")
    today = datetime.now(UTC).date()
    ctx.logger.info("forecast for %s (%d days) requested by %s", city, days, ctx.organisation_id)
    return {
        "city": city.strip(),
        "units": units,
        "days": [_day(city.strip(), today + timedelta(days=i), units) for i in range(days)],
    }


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    register(get_forecast)


@hookimpl
def plugin_config_errors(plugin_id: str, config: dict[str, object]) -> list[str]:
    units = config.get("units", "metric")
    return [] if units in ("metric", "imperial") else [f"units must be 'metric' or 'imperial', not {units!r}"]
