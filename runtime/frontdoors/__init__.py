"""The front doors: each one a thin adapter from its wire format to the one runtime and back.

``chat`` (OpenAI chat completions), ``responses`` (OpenAI Responses), ``messages``
(Anthropic Messages, with ``count_tokens`` and the native path for Anthropic
models), ``embeddings`` (OpenAI embeddings) and ``mcp`` (plugway's plugin tools as
an MCP server at ``/mcp``). Each owns its routes, its request translation, its
:class:`~runtime.request.DoorRules` (what admission asks of it) and an encoder from
the loop's events to its wire format.
"""
