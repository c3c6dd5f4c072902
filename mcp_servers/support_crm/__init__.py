"""Bundled MCP server: a small support CRM (customers, orders, tickets) in SQLite."""

from mcp_servers.support_crm.server import build_server

__all__ = ["build_server"]
