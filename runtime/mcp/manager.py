"""The runtime's MCP connection manager: MCP servers as plugin tool sources.

One :class:`McpConnection` per organisation and distinct MCP configuration: an
organisation's calls never reach a process or an HTTP session that another
organisation's calls reach, so a server's state (a memory, a counter, a browser
session) stays the organisation's. Several plugin ids of one organisation naming
the same configuration share its connection. A configuration marked
``shared: true`` gets one connection for every organisation that configures it:
the operator vouches that the server keeps no state between calls.

Start-up connects to every server concurrently and waits for
them at most ``startup_wait_s``: a slow server is reported ``starting`` and
joins when it is up, a server that is down is reported unhealthy, its tools are
not offered, and it is retried in the background. Neither stops the gateway.

Besides the server's own tools, a server that offers resources gets a
``read_resource`` tool (see :mod:`runtime.mcp.resources`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from runtime.config import McpConfig, PluginRef
from runtime.mcp.connection import (
    NO_MODEL_FOR_SAMPLING,
    McpConnection,
    config_key,
    describe_target,
    tool_annotations,
)
from runtime.mcp.resources import (
    READ_RESOURCE_SCHEMA,
    READ_RESOURCE_TOOL,
    read_resource_description,
    render_resource,
)
from runtime.orchestration.naming import public_name
from runtime.plugin_host.tool import ToolContext, ToolError, ToolResult, ToolSpec

logger = logging.getLogger("plugway.mcp")

# The organisation scope of a connection every organisation configuring it shares.
SHARED = "*"


class Placement(NamedTuple):
    """An MCP plugin as one organisation configures it."""

    organisation: str
    ref: PluginRef


def _scope(organisation: str, config: McpConfig) -> tuple[str, str]:
    return (SHARED if config.shared else organisation, config_key(config))


def _quiet_http_client_logs() -> None:
    # httpx2 logs every request at INFO: one line per MCP message over HTTP. An
    # application that set its own level for it keeps that.
    http_logger = logging.getLogger("httpx2")
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)


class McpManager:
    """Owns every MCP connection of the gateway, from start-up to shutdown."""

    def __init__(
        self,
        *,
        list_ttl_s: float = 300.0,
        max_result_chars: int = 20000,
        connect_timeout_s: float = 10.0,
        probe_timeout_s: float = 3.0,
        startup_wait_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        offline_grace_s: float = 60.0,
        ping_interval_s: float = 30.0,
    ) -> None:
        self.list_ttl_s = list_ttl_s
        self.max_result_chars = max_result_chars
        self.connect_timeout_s = connect_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.startup_wait_s = startup_wait_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.offline_grace_s = offline_grace_s
        self.ping_interval_s = ping_interval_s
        # (organisation or SHARED, configuration) -> its connection.
        self._connections: dict[tuple[str, str], McpConnection] = {}
        # ToolSpecs are rebuilt only when a connection's tool list changes.
        self._specs: dict[tuple[int, str], tuple[int, int, list[ToolSpec]]] = {}
        self._closed = False
        _quiet_http_client_logs()

    def _connection(self, organisation: str, ref: PluginRef) -> McpConnection:
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        if self._closed:
            raise RuntimeError("the MCP manager is closed")
        key = _scope(organisation, ref.mcp)
        connection = self._connections.get(key)
        if connection is None:
            connection = McpConnection(
                ref.mcp,
                label=ref.id,
                log_name=ref.id if ref.mcp.shared else f"{ref.id} ({organisation})",
                list_ttl_s=self.list_ttl_s,
                max_result_chars=self.max_result_chars,
                connect_timeout_s=self.connect_timeout_s,
                probe_timeout_s=self.probe_timeout_s,
                backoff_initial_s=self.backoff_initial_s,
                backoff_max_s=self.backoff_max_s,
                offline_grace_s=self.offline_grace_s,
                ping_interval_s=self.ping_interval_s,
            )
            self._connections[key] = connection
            connection.start()
        if ref.id not in connection.plugin_ids:
            connection.plugin_ids.append(ref.id)
        if organisation not in connection.organisations:
            connection.organisations.append(organisation)
        return connection

    async def start(self, placements: Iterable[Placement | tuple[str, PluginRef]], *, wait_s: float | None = None) -> None:
        """Connect to every MCP plugin among ``placements`` (organisation, plugin), all at once.

        Waits until each has connected or failed, but at most ``wait_s``
        (default ``startup_wait_s``): servers still connecting then are
        reported ``starting`` and offered once they are up. Never raises
        because a server fails. May be called again with more refs.
        """
        connections = {
            id(c): c
            for c in (self._connection(organisation, ref) for organisation, ref in placements if ref.mcp is not None)
        }
        if not connections:
            return
        if wait_s is None:
            # Never longer than a connect timeout: past it, an attempt has failed anyway.
            wait_s = min(self.startup_wait_s, max(c.connect_timeout_s for c in connections.values()))
        limit = wait_s
        waits = [asyncio.ensure_future(c.wait_first_attempt()) for c in connections.values()]
        _done, pending = await asyncio.wait(waits, timeout=limit)
        for future in pending:
            future.cancel()
        for connection in connections.values():
            if connection.health()["healthy"]:
                continue
            plugins = "/".join(connection.plugin_ids)
            if not connection.config.shared:
                plugins += f" ({', '.join(connection.organisations)})"
            if connection.starting:
                logger.warning(
                    "MCP plugin %s is still starting after %g s; its tools are offered once it is up",
                    plugins,
                    limit,
                )
            else:
                logger.warning(
                    "MCP plugin %s is not available (%s); its tools are not offered until it is",
                    plugins,
                    connection.error or "not connected",
                )

    async def connection_for(self, ref: PluginRef, *, organisation: str) -> McpConnection:
        """The connection serving ``ref`` for ``organisation`` (and no other, unless ``shared``), once it has tried to start."""
        connection = self._connection(organisation, ref)
        if connection.starting:
            remaining = connection.created_at + self.startup_wait_s - time.monotonic()
            if remaining > 0:
                try:
                    await asyncio.wait_for(connection.wait_first_attempt(), remaining)
                except TimeoutError:
                    pass
        return connection

    async def tools_for(self, ref: PluginRef, *, organisation: str) -> list[ToolSpec]:
        """The organisation's plugin's tools as ToolSpecs (original MCP names); [] while its server is down."""
        connection = self._connection(organisation, ref)
        if connection.starting:
            # A plugin first seen now (not passed to start()) gets its start-up wait.
            remaining = connection.created_at + self.startup_wait_s - time.monotonic()
            if remaining > 0:
                try:
                    await asyncio.wait_for(connection.wait_first_attempt(), remaining)
                except TimeoutError:
                    return []
        tools = await connection.tools_for_offer()
        # A server offering only resources still gets its read_resource tool.
        with_resources = (
            connection.offers_resources
            and connection.offering_cached()
            and not any(t.name == READ_RESOURCE_TOOL for t in connection.tools)
        )
        if not tools and not with_resources:
            return []
        cache_key = (id(connection), ref.id)
        generation = connection.tools_generation
        cached = self._specs.get(cache_key)
        if cached is not None and cached[:2] == (generation, len(tools)):
            return list(cached[2])
        specs = [self._spec(ref.id, connection, tool) for tool in tools]
        if with_resources:
            specs.append(self._read_resource_spec(ref.id, connection))
        self._specs[cache_key] = (generation, len(tools), specs)
        return list(specs)

    @staticmethod
    def _spec(plugin_id: str, connection: McpConnection, tool: Any) -> ToolSpec:
        name: str = tool.name

        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            return await connection.call_tool(name, arguments, ctx)

        return ToolSpec(
            plugin_id=plugin_id,
            name=name,
            description=tool.description or tool.title or name,
            parameters=dict(tool.input_schema),
            invoke=invoke,
            source="mcp",
            annotations=tool_annotations(tool),
        )

    @staticmethod
    def _read_resource_spec(plugin_id: str, connection: McpConnection) -> ToolSpec:
        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            uri = arguments.get("uri")
            if not isinstance(uri, str) or not uri.strip():
                raise ToolError("Give 'uri': the URI of the resource to read.")
            result = await connection.read_resource(uri.strip())
            return render_resource(result, connection.max_result_chars)

        return ToolSpec(
            plugin_id=plugin_id,
            name=READ_RESOURCE_TOOL,
            description=read_resource_description(
                plugin_id, connection.resources, connection.resource_templates
            ),
            parameters=READ_RESOURCE_SCHEMA,
            invoke=invoke,
            source="mcp",
            annotations={"readOnlyHint": True},
        )

    async def call(
        self,
        ref: PluginRef,
        tool: str,
        arguments: dict[str, Any],
        ctx: ToolContext | None = None,
        *,
        organisation: str,
        sampling_refusal: str = NO_MODEL_FOR_SAMPLING,
    ) -> str | ToolResult:
        """Call one tool of an organisation's MCP plugin by its original name (raises ToolError).

        ``read_resource`` reads a resource of a server that offers resources
        (unless the server has a tool of that name). The server's sampling
        requests during the call go to ``ctx.sample``; without one they are
        declined with ``sampling_refusal``.
        """
        connection = self._connection(organisation, ref)
        if connection.starting:
            try:
                await asyncio.wait_for(connection.wait_first_attempt(), connection.connect_timeout_s)
            except TimeoutError:
                raise ToolError(connection.unavailable_message()) from None
        if tool == READ_RESOURCE_TOOL and connection.offers_resources:
            if not any(t.name == READ_RESOURCE_TOOL for t in connection.tools):
                spec = self._read_resource_spec(ref.id, connection)
                context = ctx or ToolContext(organisation_id=organisation, plugin_id=ref.id, request_id="")
                result: str | ToolResult = await spec.invoke(arguments, context)
                return result
        return await connection.call_tool(tool, arguments, ctx, sampling_refusal=sampling_refusal)

    def connection_health(self, ref: PluginRef, *, organisation: str) -> dict[str, Any]:
        """The health entry of the connection serving ``ref`` for ``organisation`` (see :meth:`health`)."""
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        connection = self._connections.get(_scope(organisation, ref.mcp))
        if connection is None:
            return _not_started(ref.mcp)
        return connection.health()

    def health(self) -> dict[str, dict[str, Any]]:
        """plugin id -> the state of its server, for authenticated surfaces and logs.

        Each entry: ``healthy``, ``state`` (``starting``, ``ready``,
        ``reconnecting``, ``backoff``, ``closed``), ``transport``, ``target``
        (the command line or URL), ``error``, ``last_error`` and ``last_error_at``
        (the last failure, kept once the server is back), ``tools`` (the names offered),
        ``unsupported_tools``, ``resources`` (how many), ``resource_templates``,
        ``prompts``, ``pid``, ``protocol``, ``retry_in_s``, ``restarts``,
        ``organisations`` (those the connection serves) and ``shared``. The
        public ``/readyz`` shows none of it.

        A plugin id served by one connection is listed under its id. When several
        connections serve one plugin id (one per organisation, the default), each is
        listed as ``<id>@<organisation>`` (``<id>@shared`` for a shared one).
        """
        report: dict[str, dict[str, Any]] = {}
        for key, _plugin_id, connection in self._entries():
            report[key] = connection.health()
        return report

    def _entries(self) -> list[tuple[str, str, McpConnection]]:
        """(report key, plugin id, connection) for every plugin id of every connection (see :meth:`health`)."""
        pairs = [(plugin_id, c) for c in self._connections.values() for plugin_id in c.plugin_ids]
        served_by: dict[str, int] = {}
        for plugin_id, _connection in pairs:
            served_by[plugin_id] = served_by.get(plugin_id, 0) + 1
        entries: list[tuple[str, str, McpConnection]] = []
        taken: dict[str, Any] = {}
        for plugin_id, connection in pairs:
            key = plugin_id
            if served_by[plugin_id] > 1:
                key = f"{plugin_id}@{'shared' if connection.config.shared else connection.organisations[0]}"
            key = _unique(taken, key)
            taken[key] = True
            entries.append((key, plugin_id, connection))
        return entries

    def describe(self) -> dict[str, dict[str, Any]]:
        """Like :meth:`health`, plus each tool's details and the names the model sees.

        Adds ``server`` (name, version), ``tool_details`` (``name``,
        ``public_name``, ``title``, ``description``, ``annotations``,
        ``task_support``, ``offered``; the ``read_resource`` tool plugway adds
        has ``added_by_plugway``), ``resource_list``, ``resource_template_list``,
        ``prompt_list``, ``roots`` and ``sampling_model``.
        """
        report: dict[str, dict[str, Any]] = {}
        for key, plugin_id, connection in self._entries():
            report[key] = _described(plugin_id, connection)
        return report

    def describe_plugin(self, ref: PluginRef, *, organisation: str) -> dict[str, Any]:
        """The :meth:`describe` entry of one organisation's MCP plugin."""
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        connection = self._connections.get(_scope(organisation, ref.mcp))
        if connection is None:
            return {**_not_started(ref.mcp), "server": None, "tool_details": [], "resource_list": [],
                    "resource_template_list": [], "prompt_list": [], "roots": ref.mcp.roots or [],
                    "sampling_model": ref.mcp.sampling_model}
        return _described(ref.id, connection)

    async def aclose(self) -> None:
        """Close every connection and reap every child process group."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        self._specs.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)


def _described(plugin_id: str, connection: McpConnection) -> dict[str, Any]:
    described = connection.describe()
    details = [
        {**tool, "public_name": public_name(plugin_id, tool["name"])} for tool in described["tool_details"]
    ]
    if connection.offers_resources and not any(t["name"] == READ_RESOURCE_TOOL for t in details):
        details.append(
            {
                "name": READ_RESOURCE_TOOL,
                "public_name": public_name(plugin_id, READ_RESOURCE_TOOL),
                "title": None,
                "description": read_resource_description(
                    plugin_id, connection.resources, connection.resource_templates
                ),
                "annotations": {"readOnlyHint": True},
                "task_support": None,
                "offered": True,
                "added_by_plugway": True,
            }
        )
    return {**described, "tool_details": details}


def _unique(report: dict[str, Any], plugin_id: str) -> str:
    key, n = plugin_id, 1
    while key in report:
        n += 1
        key = f"{plugin_id}@{n}"
    return key


def _not_started(config: McpConfig) -> dict[str, Any]:
    return {
        "healthy": False,
        "state": "closed",
        "transport": "stdio" if config.command else "http",
        "target": describe_target(config),
        "error": "not started",
        "last_error": None,
        "last_error_at": None,
        "tools": [],
        "unsupported_tools": [],
        "resources": 0,
        "resource_templates": [],
        "prompts": [],
        "pid": None,
        "protocol": None,
        "retry_in_s": None,
        "restarts": 0,
        "organisations": [],
        "shared": config.shared,
    }
