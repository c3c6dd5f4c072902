"""What ``plugway plugins list`` and ``plugway mcp call`` need from the MCP layer."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.config import PluginRef, Settings
from runtime.mcp.connection import config_key
from runtime.mcp.manager import McpManager
from runtime.mcp.results import result_text
from runtime.plugin_host.tool import ToolContext, ToolError

CLI_SAMPLING_REFUSAL = (
    "Sampling declined: `plugway mcp call` runs the tool without a model to answer the "
    "server's sampling request. Call the tool through the gateway instead."
)


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


def _row(ref: PluginRef, orgs: list[str], described: dict[str, Any]) -> dict[str, Any]:
    details = described["tool_details"]
    return {
        "plugin_id": ref.id,
        "organisations": orgs,
        "transport": described["transport"],
        "target": described["target"],
        "healthy": described["healthy"],
        "state": described["state"],
        "error": described["error"],
        "pid": described["pid"],
        "protocol": described["protocol"],
        "server": described["server"],
        "tools": [
            {
                "name": tool["name"],
                "public_name": tool["public_name"],
                "description": tool["description"],
                "annotations": tool["annotations"],
                **({"added_by_plugway": True} if tool.get("added_by_plugway") else {}),
            }
            for tool in details
            if tool["offered"] and _allowed(ref, tool["name"])
        ],
        "not_offered": [
            {"name": tool["name"], "reason": reason}
            for tool in details
            if (reason := _why_not_offered(ref, tool, described)) is not None
        ],
        "resources": described["resource_list"],
        "resource_templates": described["resource_template_list"],
        "prompts": described["prompt_list"],
        "roots": described["roots"],
        "sampling_model": described["sampling_model"],
    }


def _allowed(ref: PluginRef, tool_name: str) -> bool:
    if ref.allowed_tools is not None and tool_name not in ref.allowed_tools:
        return False
    return tool_name not in ref.exclude_tools


def _why_not_offered(ref: PluginRef, tool: dict[str, Any], described: dict[str, Any]) -> str | None:
    if not tool["offered"]:
        reasons = {entry["name"]: entry["reason"] for entry in described["unsupported_tools"]}
        return str(reasons.get(tool["name"], "not supported"))
    if not _allowed(ref, tool["name"]):
        return "left out by allowed_tools / exclude_tools"
    return None


async def describe_mcp_plugins(
    settings: Settings, *, connect_timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Connect to every configured MCP plugin once and describe it.

    Rows, in configuration order: ``plugin_id``, ``organisations``,
    ``transport``, ``target``, ``healthy``, ``state``, ``error``, ``pid``,
    ``protocol``, ``server``, ``tools`` (``name``, ``public_name`` as the model
    sees it, ``description``, ``annotations``), ``not_offered`` (``name``,
    ``reason``), ``resources``, ``resource_templates``, ``prompts``, ``roots``,
    ``sampling_model``. Every server is stopped again before returning.
    """
    plugins = _mcp_plugins(settings)
    manager = _manager(settings, connect_timeout_s)
    try:
        # A listing waits for every server as long as each one's connect timeout allows.
        waits = [ref.mcp.connect_timeout_s or connect_timeout_s for ref, _ in plugins if ref.mcp]
        await manager.start((ref for ref, _orgs in plugins), wait_s=max(waits, default=0.0))
        for ref, _orgs in plugins:
            await manager.tools_for(ref)  # a list older than its TTL is fetched again
        return [_row(ref, orgs, manager.describe_plugin(ref)) for ref, orgs in plugins]
    finally:
        await manager.aclose()


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
    the call runs under ``orchestration.tool_timeout_s`` like in the gateway. No
    model answers here: a server's sampling request is declined, saying so.
    """
    found = next(
        ((ref, orgs) for ref, orgs in _mcp_plugins(settings) if ref.id == plugin_id), None
    )
    if found is None:
        return False, f"No MCP plugin '{plugin_id}' is configured."
    ref, orgs = found
    manager = _manager(settings, connect_timeout_s)
    loop = asyncio.get_running_loop()
    timeout = settings.orchestration.tool_timeout_s
    ceiling = loop.time() + max(settings.orchestration.tool_max_s, timeout)
    try:
        await manager.start([ref], wait_s=(ref.mcp.connect_timeout_s if ref.mcp else None) or connect_timeout_s)
        try:
            async with asyncio.timeout(timeout) as deadline:

                def progress(done: float, total: float | None, message: str | None) -> None:
                    # As in the gateway: each report moves the deadline, up to tool_max_s.
                    deadline.reschedule(min(loop.time() + timeout, ceiling))

                ctx = ToolContext(organisation_id=orgs[0], plugin_id=ref.id, request_id="cli", progress=progress)
                result = await manager.call(ref, tool, arguments, ctx, sampling_refusal=CLI_SAMPLING_REFUSAL)
        except ToolError as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"The tool '{tool}' did not answer within {timeout:g} s."
        return True, result_text(result)
    finally:
        await manager.aclose()
