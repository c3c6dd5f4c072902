"""MCP servers as plugin tool sources: connections, tool lists, calls, child processes."""

from runtime.mcp.manager import McpManager

__all__ = ["McpManager"]
