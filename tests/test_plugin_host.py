"""The plugin host: hooks, entry points, the allow-list, broken plugins, tool schemas."""

from __future__ import annotations

import asyncio
import inspect
import time
import types

import pluggy
import pytest

from runtime import ToolContext, hookimpl
from runtime.config import ConfigError, settings_from_dict
from runtime.gateway import check_plugins
from runtime.orchestration.naming import MAX_NAME, public_name
from runtime.plugin_host import hookspecs
from runtime.plugin_host.manager import load_plugins
from runtime.plugin_host.tool import tool_from_function


def module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


HOOKS = [getattr(hookspecs, n) for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "plugway_spec")]


def test_every_hook_is_documented() -> None:
    assert {s.__name__ for s in HOOKS} == {"register_tools", "plugin_config_errors"}
    for spec in HOOKS:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 20, spec.__name__


def test_every_hook_is_implemented_and_called_in_the_tests() -> None:
    from pathlib import Path

    root = Path(__file__).parent.parent
    tests = [*root.joinpath("tests").rglob("test_*.py"), *root.joinpath("examples").rglob("test_*.py")]
    suite = "\n".join(p.read_text() for p in tests)
    for spec in HOOKS:
        assert f"def {spec.__name__}(" in suite, f"no test implements {spec.__name__}"
    # How the host calls each hook, and that the suite drives those paths.
    assert "load_plugins(" in suite  # register_tools
    assert "config_errors(" in suite and "check_plugins(" in suite  # plugin_config_errors


def test_first_party_plugins_register_through_the_hooks() -> None:
    host = load_plugins()
    for plugin_id in ("clock", "calculator", "http"):
        assert host.plugins[plugin_id].origin == "builtin"
        assert host.pm.get_plugin(plugin_id) is not None
    assert set(host.plugins["clock"].tools) == {"now", "convert_time", "date_add", "days_between"}


def test_installed_example_plugin_is_found_by_entry_point() -> None:
    host = load_plugins()
    forecast = host.plugins["forecast"]
    assert forecast.origin == "entrypoint:plugway-forecast"
    spec = forecast.tools["get_forecast"]
    assert spec.parameters["required"] == ["city"]
    assert "ctx" not in spec.parameters["properties"]
    assert spec.description == "Weather forecast for a city, for 1 to 7 days starting today."


def test_allow_list_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGWAY_PLUGINS", "")
    assert "forecast" not in load_plugins().plugins
    monkeypatch.setenv("PLUGWAY_PLUGINS", "forecast,other")
    assert "forecast" in load_plugins().plugins
    # First-party plugins are part of the product and not subject to the allow-list.
    assert "clock" in load_plugins().plugins


def test_broken_plugin_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    @hookimpl
    def register_tools(register):  # type: ignore[no-untyped-def]
        raise RuntimeError("plugin bug")

    def bad_signature(*args: int) -> int:
        return 0

    @hookimpl
    def register_tools_bad(register):  # type: ignore[no-untyped-def]
        register(bad_signature)

    host = load_plugins(extra={"broken": module("broken", register_tools=register_tools), "alsobroken": module("alsobroken", register_tools=register_tools_bad)})
    assert "broken" in host.failures and "plugin bug" in host.failures["broken"]
    assert "alsobroken" in host.failures
    assert "broken" not in host.plugins and "clock" in host.plugins
    assert "failed to register" in caplog.text


def test_misspelt_hook_fails_loudly() -> None:
    @hookimpl
    def register_toolz(register):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(pluggy.PluginValidationError):
        load_plugins(extra={"typo": module("typo", register_toolz=register_toolz)})


def test_configured_plugin_that_is_not_installed_stops_startup() -> None:
    settings = settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "clock"}, {"id": "ghost"}]}]})
    with pytest.raises(ConfigError, match=r"organisations\[0\]\.plugins\[1\]\.id: plugin 'ghost' is not installed"):
        check_plugins(settings, load_plugins())


def test_plugin_config_errors_hook_stops_startup() -> None:
    settings = settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "forecast", "config": {"units": "kelvin"}}]}]})
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config: units must be"):
        check_plugins(settings, load_plugins())


def test_schema_from_signature_hides_ctx_and_keeps_defaults() -> None:
    async def lookup(order_id: str, include_items: bool = False, limit: int = 10, *, ctx: ToolContext) -> dict:
        """Look up an order by id.

        Longer explanation for humans.
        """
        return {}

    spec = tool_from_function("shop", lookup)
    assert spec.name == "lookup"
    assert spec.description.startswith("Look up an order by id.")
    assert spec.parameters["required"] == ["order_id"]
    assert spec.parameters["properties"]["limit"] == {"default": 10, "type": "integer"}
    assert set(spec.parameters["properties"]) == {"order_id", "include_items", "limit"}


async def test_sync_tools_run_off_the_event_loop() -> None:
    def blocking(seconds: float) -> str:
        """Blocks."""
        time.sleep(seconds)
        return "done"

    spec = tool_from_function("t", blocking)
    ctx = ToolContext(organisation_id="o", plugin_id="t", request_id="r")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    assert await spec.invoke({"seconds": 0.3}, ctx) == "done"
    task.cancel()
    assert ticks >= 15, "the event loop was blocked while the sync tool ran"
    assert not inspect.iscoroutinefunction(blocking)


def test_public_names_are_safe_short_and_distinct() -> None:
    assert public_name("clock", "now") == "clock__now"
    dotted = public_name("kb", "articles.search")
    underscored = public_name("kb", "articles_search")
    assert dotted != underscored and dotted.startswith("kb__articles_search_")
    long_a = public_name("plugin", "x" * 120 + "a")
    long_b = public_name("plugin", "x" * 120 + "b")
    for name in (dotted, long_a, long_b):
        assert len(name) <= MAX_NAME
        assert all(c.isalnum() or c in "_-" for c in name)
    assert long_a != long_b


def test_plugin_config_errors_is_asked_only_of_its_own_plugin() -> None:
    seen: list[tuple[str, dict]] = []

    @hookimpl
    def plugin_config_errors(plugin_id: str, config: dict) -> list[str]:
        seen.append((plugin_id, config))
        return [] if config.get("region") in ("eu", "us") else ["region must be 'eu' or 'us'"]

    host = load_plugins(extra={"regional": module("regional", plugin_config_errors=plugin_config_errors)})
    assert host.plugins["regional"].tools == {}
    good = settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "regional", "config": {"region": "eu"}}, {"id": "clock"}]}]})
    check_plugins(good, host)
    assert seen == [("regional", {"region": "eu"})]
    bad = settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "regional", "config": {"region": "mars"}}]}]})
    with pytest.raises(ConfigError, match="region must be"):
        check_plugins(bad, host)
