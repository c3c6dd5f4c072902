"""``/mcp``: plugway as a streamable-HTTP MCP server of the calling key's organisation's plugin tools,
and of its MCP servers' resources and prompts.

What a client sees:

- **Authentication**: the gateway key as ``Authorization: Bearer pw_...`` (or
  HTTP Basic with the key as user name), checked on every HTTP request before
  the SDK reads a single MCP message. No key, an unknown key or a revoked one
  (within ``key_cache_ttl_s``) is ``401`` with the OpenAI error envelope and
  ``WWW-Authenticate: Bearer`` (naming the protected resource metadata when
  the OAuth feature, :mod:`runtime.oauth`, is installed: its access tokens
  are accepted here too, each acting as the gateway key of its grant). A handshake-era session belongs to the key that
  opened it: another key presenting its ``Mcp-Session-Id`` gets ``404``.
- **Protocol**: the SDK's session manager serves both eras: 2026-07-28
  (stateless, one POST per request) and 2025-11-25 and earlier (initialize,
  ``Mcp-Session-Id``, a GET stream for notifications). Results stream as SSE
  so that progress notifications reach the client.
- **tools/list**: every tool of every plugin configured for the key's
  organisation (first-party, entry-point and MCP-backed), under the same
  ``<plugin-id>__<tool>`` names, descriptions, JSON schemas and annotations
  the orchestration loop offers a model, narrowed by ``allowed_tools`` /
  ``exclude_tools`` as there. The loop's tool-search tool is not offered:
  MCP clients page through the list instead (``nextCursor``, 100 tools a
  page). Results say ``cacheScope: private`` and ``ttlMs: 0``. Listing checks
  the organisation and its budget but spends none of the key's rate limit.
- **tools/call**: an unknown tool is a JSON-RPC ``-32602`` error (and costs
  nothing). Otherwise the call is admitted like any request (organisation
  403, budget 402, the key's RPM 429 or 503 when the limiter is unreachable):
  a refusal is the JSON-RPC error ``-32001`` whose message is the gateway's
  and whose ``data`` holds ``status``, ``code``, ``type`` and, for rate
  limits, ``retry_after_s``. An admitted call runs exactly as inside the loop
  (``runtime.orchestration.tools.run_tool_call``): argument validation
  against the tool's schema, ``tool_timeout_s`` extended by progress up to
  ``tool_max_s``, ``max_tool_result_chars``. Failures (bad arguments, a
  ``ToolError``, an unexpected exception, a timeout) come back as a result
  with ``isError: true`` and the message as text; images a tool returns as
  image content; a result that is a JSON object also as
  ``structuredContent``. Progress a tool reports reaches a client that sent a
  ``progressToken``. Tools that ask the request's model (sampling) get no
  model here and say so. A backing server's elicitation reaches a client that
  declared the capability (see :mod:`runtime.frontdoors.mcp.elicitation`).
- **Resources, prompts, completion**: the organisation's MCP servers' own,
  named ``plugway://<plugin-id>/<uri>`` and ``<plugin-id>__<prompt>`` (see
  :mod:`runtime.frontdoors.mcp.offerings`), read through the organisation's
  own connections; subscriptions are passed through both ways.
- **Records**: every admitted call writes a usage record with source
  ``mcp``, ``model`` = the public tool name (plugin and tool), ``tool_calls``
  1, ``latency_ms`` and ``status`` (``ok``, ``tool_error``, ``tool_failed``,
  ``invalid_arguments``, ``timeout``, or ``cancelled`` when the client
  cancelled or went away), under the HTTP request's ``X-Request-Id``.
- **list_changed**: when the organisation's tool list changes (a backing MCP
  server announced a new list), connected clients are told:
  ``notifications/tools/list_changed`` on a 2025 session's GET stream, a
  ``ToolsListChanged`` event on 2026-07-28 ``subscriptions/listen`` streams.
  A watcher per organisation with connected clients compares the list every
  second (see :mod:`runtime.frontdoors.mcp.changes`).
"""

from runtime.frontdoors.mcp.routes import McpFrontDoor

__all__ = ["McpFrontDoor"]
