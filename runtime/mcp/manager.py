"""The runtime's MCP connection manager: MCP servers as plugin tool sources.

One :class:`McpConnection` per distinct MCP configuration, however many
organisations configure it (under whatever plugin ids): one child process, one
tool-list cache. Start-up connects to every server concurrently and never fails
because one of them does; a server that is down is reported unhealthy, its
tools are not offered, and it is retried in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from runtime.config import PluginRef
from runtime.mcp.connection import McpConnection, config_key
from runtime.plugin_host.tool import ToolContext, ToolError, ToolSpec

logger = logging.getLogger("plugway.mcp")


class McpManager:
    """Owns every MCP connection of the gateway, from start-up to shutdown."""

    def __init__(
        self,
        *,
        list_ttl_s: float = 300.0,
        max_result_chars: int = 20000,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.list_ttl_s = list_ttl_s
        self.max_result_chars = max_result_chars
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._connections: dict[str, McpConnection] = {}
        # ToolSpecs are rebuilt only when a connection's tool list changes.
        self._specs: dict[tuple[str, str], tuple[int, list[ToolSpec]]] = {}
        self._closed = False

    def _connection(self, ref: PluginRef) -> McpConnection:
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        if self._closed:
            raise RuntimeError("the MCP manager is closed")
        key = config_key(ref.mcp)
        connection = self._connections.get(key)
        if connection is None:
            connection = McpConnection(
                ref.mcp,
                label=ref.id,
                list_ttl_s=self.list_ttl_s,
                max_result_chars=self.max_result_chars,
                connect_timeout_s=self.connect_timeout_s,
                backoff_initial_s=self.backoff_initial_s,
                backoff_max_s=self.backoff_max_s,
            )
            self._connections[key] = connection
            connection.start()
        if ref.id not in connection.plugin_ids:
            connection.plugin_ids.append(ref.id)
        return connection

    async def start(self, refs: Iterable[PluginRef]) -> None:
        """Connect to every MCP plugin among ``refs``; waits at most ``connect_timeout_s`` in all.

        Never raises because a server fails: it is marked unhealthy and retried
        in the background. May be called again with more refs.
        """
        connections = {
            id(c): c for c in (self._connection(ref) for ref in refs if ref.mcp is not None)
        }
        if not connections:
            return
        waits = [asyncio.ensure_future(c.wait_first_attempt()) for c in connections.values()]
        _done, pending = await asyncio.wait(waits, timeout=self.connect_timeout_s)
        for future in pending:
            future.cancel()
        for connection in connections.values():
            if connection.health()["healthy"]:
                continue
            logger.warning(
                "MCP plugin %s is not available yet (%s); its tools are not offered until it is",
                "/".join(connection.plugin_ids),
                connection.error or "still connecting",
            )

    async def tools_for(self, ref: PluginRef) -> list[ToolSpec]:
        """The plugin's tools as ToolSpecs (original MCP names); [] while its server is down."""
        connection = self._connection(ref)
        if not connection.ever_connected and connection.health()["state"] == "connecting":
            # A plugin first seen here (not passed to start()): give it one attempt.
            try:
                await asyncio.wait_for(connection.wait_first_attempt(), self.connect_timeout_s)
            except TimeoutError:
                return []
        tools = await connection.tools_for_offer()
        cache_key = (config_key(connection.config), ref.id)
        cached = self._specs.get(cache_key)
        if (
            cached is not None
            and cached[0] == connection.tools_generation
            and len(cached[1]) == len(tools)
        ):
            return list(cached[1])
        specs = [self._spec(ref.id, connection, tool) for tool in tools]
        if tools is connection.tools:
            self._specs[cache_key] = (connection.tools_generation, specs)
        return list(specs)

    @staticmethod
    def _spec(plugin_id: str, connection: McpConnection, tool: Any) -> ToolSpec:
        name: str = tool.name

        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str:
            return await connection.call_tool(name, arguments)

        return ToolSpec(
            plugin_id=plugin_id,
            name=name,
            description=tool.description or tool.title or name,
            parameters=dict(tool.input_schema),
            invoke=invoke,
            source="mcp",
        )

    async def call(self, ref: PluginRef, tool: str, arguments: dict[str, Any]) -> str:
        """Call one tool of an MCP plugin by its original name (raises ToolError)."""
        connection = self._connection(ref)
        if connection.health()["state"] == "connecting":
            try:
                await asyncio.wait_for(connection.wait_first_attempt(), self.connect_timeout_s)
            except TimeoutError:
                raise ToolError(connection.unavailable_message()) from None
        return await connection.call_tool(tool, arguments)

    def connection_health(self, ref: PluginRef) -> dict[str, Any]:
        """The health entry of the connection serving ``ref`` (see :meth:`health`)."""
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        connection = self._connections.get(config_key(ref.mcp))
        if connection is None:
            return {
                "healthy": False,
                "transport": "stdio" if ref.mcp.command else "http",
                "state": "closed",
                "error": "not started",
                "tools": [],
                "pid": None,
                "protocol": None,
                "retry_in_s": None,
            }
        return connection.health()

    def health(self) -> dict[str, dict[str, Any]]:
        """plugin id -> {"healthy", "transport", "error", "tools", "pid", "state", "protocol", "retry_in_s"}.

        When one plugin id names different MCP configurations in different
        organisations, the later ones are listed as ``<id>@2``, ``<id>@3``, ….
        """
        report: dict[str, dict[str, Any]] = {}
        for connection in self._connections.values():
            entry = connection.health()
            for plugin_id in connection.plugin_ids:
                key, n = plugin_id, 1
                while key in report:
                    n += 1
                    key = f"{plugin_id}@{n}"
                report[key] = dict(entry)
        return report

    async def aclose(self) -> None:
        """Close every connection and reap every child process group."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        self._specs.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)
