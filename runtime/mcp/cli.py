"""What ``plugway plugins list`` and ``plugway mcp call`` need from the MCP layer."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

from runtime.config import PluginRef, Settings
from runtime.mcp.connection import config_key
from runtime.mcp.manager import McpManager
from runtime.plugin_host.tool import ToolError


def _mcp_plugins(settings: Settings) -> list[tuple[PluginRef, list[str]]]:
    """Distinct (plugin id, MCP config) pairs, with the organisations configuring each."""
    found: dict[tuple[str, str], tuple[PluginRef, list[str]]] = {}
    for org in settings.organisations:
        for ref in org.plugins:
            if ref.mcp is None:
                continue
            entry = found.setdefault((ref.id, config_key(ref.mcp)), (ref, []))
            entry[1].append(org.id)
    return list(found.values())


def _manager(settings: Settings, connect_timeout_s: float) -> McpManager:
    return McpManager(
        max_result_chars=settings.orchestration.max_tool_result_chars,
        connect_timeout_s=connect_timeout_s,
    )


async def describe_mcp_plugins(
    settings: Settings, *, connect_timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Connect to every configured MCP plugin once and describe it.

    Rows: ``{"plugin_id", "organisations", "transport", "target", "healthy",
    "error", "pid", "protocol", "tools": [{"name", "description"}]}``, in
    configuration order. Every server is stopped again before returning.
    """
    plugins = _mcp_plugins(settings)
    manager = _manager(settings, connect_timeout_s)
    rows: list[dict[str, Any]] = []
    try:
        await manager.start(ref for ref, _orgs in plugins)
        for ref, orgs in plugins:
            assert ref.mcp is not None
            specs = await manager.tools_for(ref)
            health = manager.connection_health(ref)
            rows.append(
                {
                    "plugin_id": ref.id,
                    "organisations": orgs,
                    "transport": health["transport"],
                    "target": shlex.join(ref.mcp.command) if ref.mcp.command else ref.mcp.url,
                    "healthy": health["healthy"],
                    "error": health["error"],
                    "pid": health["pid"],
                    "protocol": health["protocol"],
                    "tools": [
                        {"name": spec.name, "description": spec.description} for spec in specs
                    ],
                }
            )
    finally:
        await manager.aclose()
    return rows


async def call_tool(
    settings: Settings,
    plugin_id: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    connect_timeout_s: float = 10.0,
) -> tuple[bool, str]:
    """Call one tool of an MCP plugin by hand: ``(ok, text)``; never raises for tool failures.

    The plugin is the first organisation's plugin with that id that is MCP-backed;
    the call runs under ``orchestration.tool_timeout_s`` like in the gateway.
    """
    ref = next((ref for ref, _orgs in _mcp_plugins(settings) if ref.id == plugin_id), None)
    if ref is None:
        return False, f"No MCP plugin '{plugin_id}' is configured."
    manager = _manager(settings, connect_timeout_s)
    try:
        await manager.start([ref])
        timeout = settings.orchestration.tool_timeout_s
        try:
            return True, await asyncio.wait_for(manager.call(ref, tool, arguments), timeout)
        except ToolError as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"The tool '{tool}' did not answer within {timeout:g} s."
    finally:
        await manager.aclose()
