"""What ``plugway plugins list`` and ``plugway mcp call`` need: rows, their columns, a call by hand."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.cli_output import Column
from runtime.config import PluginRef, Settings
from runtime.mcp.connection import config_key
from runtime.mcp.manager import McpManager
from runtime.mcp.oauth import UpstreamAuth
from runtime.mcp.results import result_text
from runtime.orchestration.naming import public_name
from runtime.plugin_host.manager import PluginHost
from runtime.plugin_host.tool import ToolContext, ToolError
from runtime.storage.db import DatabaseUnavailable, open_database

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


def _upstream_auth(settings: Settings) -> UpstreamAuth | None:
    """The stored OAuth tokens, for servers with ``auth``: read from the gateway's database if it exists."""
    if not any(ref.mcp is not None and ref.mcp.auth is not None for org in settings.organisations for ref in org.plugins):
        return None
    try:
        engine = open_database(settings.database_url, create=False)
    except DatabaseUnavailable:
        return None
    return UpstreamAuth(settings, engine) if engine is not None else None


def _manager(settings: Settings, connect_timeout_s: float) -> McpManager:
    return McpManager(
        max_result_chars=settings.orchestration.max_tool_result_chars,
        connect_timeout_s=connect_timeout_s,
        upstream_auth=_upstream_auth(settings),
    )


def _row(ref: PluginRef, orgs: list[str], described: dict[str, Any]) -> dict[str, Any]:
    details = described["tool_details"]
    return {
        "plugin_id": ref.id,
        "organisations": orgs,
        # One connection for all of them (shared: true), or one each (the default).
        "shared": described["shared"],
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
        # One connection per distinct configuration is enough to describe it, whichever
        # organisation's it is: listing a server never runs a tool.
        await manager.start(((orgs[0], ref) for ref, orgs in plugins), wait_s=max(waits, default=0.0))
        for ref, orgs in plugins:
            await manager.tools_for(ref, organisation=orgs[0])  # a list older than its TTL is fetched again
        return [_row(ref, orgs, manager.describe_plugin(ref, organisation=orgs[0])) for ref, orgs in plugins]
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
        await manager.start([(orgs[0], ref)], wait_s=(ref.mcp.connect_timeout_s if ref.mcp else None) or connect_timeout_s)
        try:
            async with asyncio.timeout(timeout) as deadline:

                def progress(done: float, total: float | None, message: str | None) -> None:
                    # As in the gateway: each report moves the deadline, up to tool_max_s.
                    deadline.reschedule(min(loop.time() + timeout, ceiling))

                ctx = ToolContext(organisation_id=orgs[0], plugin_id=ref.id, request_id="cli", progress=progress)
                result = await manager.call(
                    ref, tool, arguments, ctx, organisation=orgs[0], sampling_refusal=CLI_SAMPLING_REFUSAL
                )
        except ToolError as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"The tool '{tool}' did not answer within {timeout:g} s."
        return True, result_text(result)
    finally:
        await manager.aclose()


# -- plugway plugins list ---------------------------------------------------------------------


def _python_rows(settings: Settings, host: PluginHost) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for plugin in host.plugins.values():
        orgs = [
            org.id
            for org in settings.organisations
            if (ref := org.plugin(plugin.id)) is not None and ref.mcp is None
        ]
        tools = [
            {"name": tool.name, "public_name": public_name(plugin.id, tool.name), "description": tool.description}
            for tool in plugin.tools.values()
        ]
        rows.append(
            {"plugin_id": plugin.id, "source": plugin.origin, "organisations": orgs, "healthy": True, "tools": tools}
        )
    for plugin_id, failure in host.failures.items():
        rows.append(
            {"plugin_id": plugin_id, "source": "entrypoint", "organisations": [], "healthy": False, "error": failure, "tools": []}
        )
    return rows


def list_plugins(settings: Settings, host: PluginHost, *, connect_timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every plugin, Python and MCP, as ``plugway plugins list`` shows it (and ``--json`` prints it).

    Python rows: ``plugin_id``, ``source``, ``organisations``, ``healthy``
    (``error`` when it failed to load), ``tools`` (``name``, ``public_name``,
    ``description``). MCP rows: those of :func:`describe_mcp_plugins`, with
    ``source`` ``mcp``.
    """
    rows = _python_rows(settings, host)
    if any(ref.mcp for org in settings.organisations for ref in org.plugins):
        described = asyncio.run(describe_mcp_plugins(settings, connect_timeout_s=connect_timeout_s))
        rows += [{"source": "mcp", **row} for row in described]
    return rows


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _tool_name(plugin_id: str, tool: dict[str, Any]) -> str:
    name = str(tool["public_name"])
    if name != f"{plugin_id}__{tool['name']}":
        # A sanitised or hashed name: say which tool of the server it is.
        name += f" ({tool['name']})"
    return name


def _about_tool(tool: dict[str, Any]) -> str:
    hints = tool.get("annotations") or {}
    badges = [label for key, label in (("readOnlyHint", "read-only"), ("destructiveHint", "destructive")) if hints.get(key)]
    description = _first_line(tool.get("description"))
    return " ".join(part for part in (f"[{', '.join(badges)}]" if badges else "", description) if part)


def _source(row: dict[str, Any]) -> str:
    return f"mcp ({row['transport']})" if row["source"] == "mcp" else str(row["source"])


def _health(row: dict[str, Any]) -> str:
    mcp = row["source"] == "mcp"
    if row.get("healthy"):
        if not mcp:
            return "ok"
        return f"ok ({row['state']}, pid {row['pid']})" if row.get("pid") else f"ok ({row['state']})"
    state = f" ({row['state']})" if row.get("state") else ""
    return f"unhealthy{state}: {row.get('error') or 'not connected'}"


def plugin_tool_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per tool (so ``plugway plugins list | grep TOOL`` finds it with its plugin).

    A plugin with no tool still has a line; tools a server has but the model is not
    offered, and a server's resources, templates and prompts, get lines of their own.
    """
    lines: list[dict[str, Any]] = []
    for row in rows:
        plugin_id = row["plugin_id"]
        shared = {
            "plugin": plugin_id, "source": _source(row), "target": row.get("target"),
            "organisations": row.get("organisations", []), "health": _health(row),
        }
        for tool in row.get("tools", []):
            lines.append({**shared, "tool": _tool_name(plugin_id, tool), "about": _about_tool(tool)})
        for tool in row.get("not_offered", []):
            lines.append({**shared, "tool": tool["name"], "about": f"not offered: {tool['reason']}"})
        extras = []
        if row.get("resources"):
            extras.append(f"resources: {len(row['resources'])}")
        if row.get("resource_templates"):
            extras.append("templates: " + ", ".join(t["uri_template"] for t in row["resource_templates"]))
        if row.get("prompts"):
            extras.append("prompts: " + ", ".join(p["name"] for p in row["prompts"]))
        if extras or not row.get("tools"):
            lines.append({**shared, "tool": None, "about": "; ".join(extras)})
    return lines


PLUGIN_COLUMNS = (
    Column("plugin", "plugin", identifier=True),
    Column("tool (as the model sees it)", "tool", identifier=True),
    Column("source", "source"),
    Column("health", "health"),
    Column("organisations", "organisations", optional=True),
    Column("about", "about", optional=True),
    Column("server", "target", optional=True),
)
