"""OAuth for upstream MCP servers: plugway as the OAuth client of a plugin's HTTP MCP server.

- :mod:`runtime.mcp.oauth.secrets`: the key from ``secrets_key`` that encrypts tokens at rest;
- :mod:`runtime.mcp.oauth.tables` and :mod:`runtime.mcp.oauth.store`: the stored tokens,
  registered clients and authorizations in progress;
- :mod:`runtime.mcp.oauth.client`: discovery (RFC 9728, RFC 8414), dynamic registration,
  PKCE and the token endpoint;
- :mod:`runtime.mcp.oauth.service`: :class:`UpstreamAuth`, what the MCP manager and the
  routes use: the bearer token of a server for an organisation or an end user (refreshed
  before it expires), starting and completing an authorization, and end users' links.
"""

from runtime.mcp.oauth.service import NotAuthorized, UpstreamAuth

__all__ = ["NotAuthorized", "UpstreamAuth"]
