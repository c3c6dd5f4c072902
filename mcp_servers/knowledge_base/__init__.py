"""Bundled MCP server: a help-centre knowledge base with SQLite FTS5 search."""

from mcp_servers.knowledge_base.server import build_server

__all__ = ["build_server"]
