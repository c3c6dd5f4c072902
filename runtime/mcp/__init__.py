"""MCP servers as plugin tool sources: connections, tool lists, calls, child processes."""

from runtime.mcp.manager import McpManager
from runtime.mcp.naming import sanitize_tool_name

__all__ = ["McpManager", "sanitize_tool_name"]
