"""The example plugin's own tests, through the public API only."""

from __future__ import annotations

import asyncio
import logging

import forecast_plugin
import pytest

from runtime import ToolContext, ToolError


def ctx(**config: object) -> ToolContext:
    return ToolContext(organisation_id="acme", plugin_id="forecast", request_id="req_1", config=config, logger=logging.getLogger("t"))


def test_forecast_is_deterministic_and_sized() -> None:
    first = asyncio.run(forecast_plugin.get_forecast("Paris", 3, ctx=ctx()))
    again = asyncio.run(forecast_plugin.get_forecast("Paris", 3, ctx=ctx()))
    assert first == again
    assert first["city"] == "Paris" and first["units"] == "metric"
    assert len(first["days"]) == 3  # type: ignore[arg-type]
    for day in first["days"]:  # type: ignore[union-attr]
        assert day["low"] < day["high"]


def test_imperial_units_from_config() -> None:
    metric = asyncio.run(forecast_plugin.get_forecast("Oslo", 1, ctx=ctx(units="metric")))
    imperial = asyncio.run(forecast_plugin.get_forecast("Oslo", 1, ctx=ctx(units="imperial")))
    celsius = metric["days"][0]["high"]  # type: ignore[index]
    assert imperial["days"][0]["high"] == round(celsius * 9 / 5 + 32)  # type: ignore[index]


@pytest.mark.parametrize(("city", "days"), [("", 1), ("Paris", 0), ("Paris", 8)])
def test_bad_arguments_raise_tool_error(city: str, days: int) -> None:
    with pytest.raises(ToolError):
        asyncio.run(forecast_plugin.get_forecast(city, days, ctx=ctx()))


def test_config_validation() -> None:
    assert forecast_plugin.plugin_config_errors("forecast", {"units": "kelvin"})
    assert forecast_plugin.plugin_config_errors("forecast", {"units": "metric"}) == []
