"""``/mcp`` as an OAuth-protected MCP server, with plugway as its own authorization server.

Follows the MCP authorization specification (2025-11-25, and what 2026-07-28 adds:
Client ID Metadata Documents preferred over dynamic registration, the ``iss`` of RFC 9207
on the redirect back). An MCP client that knows only the gateway's ``/mcp`` URL gets a
401 whose ``WWW-Authenticate`` names the protected resource metadata (RFC 9728), finds
plugway as the authorization server (RFC 8414), registers (a Client ID Metadata Document,
or RFC 7591), and sends the person to ``/oauth/authorize`` with PKCE (S256) and the
resource indicator (RFC 8707). plugway parks the request and opens the console's consent
page (``/console/oauth``), where someone signed in with an admin key picks the
organisation and scopes; approving mints a gateway key of that organisation and a grant,
and sends the browser back with a code. Access tokens (``pwo_…``, one hour) and refresh
tokens (``pwr_…``, rotated at each use) act as that key on ``/mcp`` only: same scopes,
limits, usage records and audit. The console lists the grants; revoking one ends its
tokens and its key.

Modules: :mod:`~runtime.oauth.models` (tables), :mod:`~runtime.oauth.store` (records),
:mod:`~runtime.oauth.server` (the provider the MCP SDK's OAuth handlers call),
:mod:`~runtime.oauth.cimd` (client metadata documents, fetched SSRF-safe),
:mod:`~runtime.oauth.bearer` (an access token on ``/mcp``), :mod:`~runtime.oauth.routes`.
"""
