"""The one plugin loader: first-party plugins, entry points, the allow-list, provenance.

First-party plugins (``plugins/``) register through the same hooks as third-party
ones. Third-party plugins are found through the ``plugway`` entry-point group;
the entry-point name is the plugin id. ``PLUGWAY_PLUGINS`` (comma-separated ids)
restricts which third-party plugins load; set it to an empty string to load none.
A plugin that fails to import or register is logged and skipped.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, cast

import pluggy

from runtime.plugin_host import hookspecs
from runtime.plugin_host.tool import ToolSpec, tool_from_function

log = logging.getLogger("plugway.plugins")

ENTRY_POINT_GROUP = "plugway"
ALLOW_LIST_ENV = "PLUGWAY_PLUGINS"

# id -> module of the first-party plugins shipped in plugins/.
DEFAULT_PLUGINS: dict[str, str] = {
    "clock": "plugins.clock",
    "calculator": "plugins.calculator",
    "http": "plugins.http_fetch",
}


@dataclass
class LoadedPlugin:
    id: str
    origin: str  # "builtin" or "entrypoint:<distribution>"
    module: str
    tools: dict[str, ToolSpec] = field(default_factory=dict)


@dataclass
class PluginHost:
    """Python plugins by id, with their tools and where they came from."""

    pm: pluggy.PluginManager
    plugins: dict[str, LoadedPlugin] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def tools(self, plugin_id: str) -> list[ToolSpec]:
        plugin = self.plugins.get(plugin_id)
        return list(plugin.tools.values()) if plugin else []

    def config_errors(self, plugin_id: str, config: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        for impl in self.pm.hook.plugin_config_errors.get_hookimpls():
            if impl.plugin_name != plugin_id:
                continue
            found = cast("list[str] | None", impl.function(plugin_id=plugin_id, config=config))
            problems.extend(found or [])
        return problems


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def load_plugins(*, extra: dict[str, ModuleType | object] | None = None) -> PluginHost:
    """Load first-party plugins, allowed entry-point plugins and ``extra`` (id -> module)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm=pm)
    origins: dict[str, tuple[str, str]] = {}

    for plugin_id, module_name in DEFAULT_PLUGINS.items():
        _register(host, plugin_id, functools.partial(importlib.import_module, module_name), "builtin", origins)

    allowed = _allow_list()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            log.info("plugin %s not in %s; skipped", ep.name, ALLOW_LIST_ENV)
            continue
        if ep.name in origins:
            log.error("plugin id %s already taken by %s; entry point %s skipped", ep.name, origins[ep.name][0], ep.value)
            host.failures[ep.name] = "duplicate plugin id"
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        _register(host, ep.name, ep.load, f"entrypoint:{dist}", origins)

    for plugin_id, module in (extra or {}).items():
        _register(host, plugin_id, functools.partial(_identity, module), "extra", origins)

    pm.check_pending()
    _collect_tools(host, origins)
    return host


def _identity(value: object) -> object:
    return value


def _register(
    host: PluginHost,
    plugin_id: str,
    load: Callable[[], Any],
    origin: str,
    origins: dict[str, tuple[str, str]],
) -> None:
    try:
        module = load()
        host.pm.register(module, name=plugin_id)
    except Exception as exc:  # a broken third-party plugin must not take the gateway down
        log.exception("plugin %s (%s) failed to load; skipped", plugin_id, origin)
        host.failures[plugin_id] = f"{type(exc).__name__}: {exc}"
        return
    origins[plugin_id] = (origin, getattr(module, "__name__", repr(module)))


def _collect_tools(host: PluginHost, origins: dict[str, tuple[str, str]]) -> None:
    # Each implementation is called with its own ``register`` so the core knows
    # which plugin every tool came from; plugins never name themselves.
    for impl in host.pm.hook.register_tools.get_hookimpls():
        plugin_id = impl.plugin_name
        origin, module_name = origins[plugin_id]
        loaded = LoadedPlugin(id=plugin_id, origin=origin, module=module_name)

        def register(
            fn: Callable[..., Any],
            name: str | None = None,
            *,
            annotations: dict[str, Any] | None = None,
            _loaded: LoadedPlugin = loaded,
        ) -> None:
            spec = tool_from_function(_loaded.id, fn, name=name, annotations=annotations)
            if spec.name in _loaded.tools:
                raise ValueError(f"tool {spec.name} registered twice")
            _loaded.tools[spec.name] = spec

        try:
            result = impl.function(register=register)
            if inspect.isawaitable(result):
                raise TypeError("register_tools must be a plain function")
        except Exception as exc:
            log.exception("plugin %s failed to register its tools; skipped", plugin_id)
            host.failures[plugin_id] = f"{type(exc).__name__}: {exc}"
            host.pm.unregister(name=plugin_id)
            continue
        host.plugins[plugin_id] = loaded
    # Plugins without tools (only other hooks) are still listed.
    for plugin_id, (origin, module_name) in origins.items():
        if plugin_id not in host.plugins and plugin_id not in host.failures:
            host.plugins[plugin_id] = LoadedPlugin(id=plugin_id, origin=origin, module=module_name)
