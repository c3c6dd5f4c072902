"""What ``/mcp`` serves besides tools: its organisation's MCP servers' resources and prompts.

Naming, so that two servers cannot collide and a client can only ever reach a
server its organisation configured:

- a **resource** (and a resource template) keeps its server's URI behind the
  prefix ``plugway://<plugin-id>/``: ``notes://welcome`` of plugin ``kb`` is
  ``plugway://kb/notes://welcome``, the template ``notes://{topic}`` is
  ``plugway://kb/notes://{topic}`` (a client fills it in as it would the
  original). Its ``name`` becomes ``<plugin-id>__<name>``, as a tool's does;
- a **prompt** is ``<plugin-id>__<prompt>``, exactly as a tool is named.

A URI is resolved against the calling key's organisation's configured plugins
and read through that organisation's own connection (per-organisation unless
the server is ``shared``): a plugin id the organisation does not configure is
an unknown resource, whatever URI follows it. Resource links and embedded
resources in what a server returns get the same prefix, so a client can read
what it is pointed at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from runtime.config import OrganisationConfig, PluginRef
from runtime.mcp.connection import McpConnection
from runtime.orchestration.naming import public_name

URI_PREFIX = "plugway://"


def public_uri(plugin_id: str, uri: str) -> str:
    """A server's resource URI (or URI template) as ``/mcp`` names it."""
    return f"{URI_PREFIX}{plugin_id}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """(plugin id, the server's own URI) of a ``/mcp`` resource URI, or None if it names no plugin."""
    if not uri.startswith(URI_PREFIX):
        return None
    plugin_id, slash, original = uri[len(URI_PREFIX) :].partition("/")
    if not plugin_id or not slash or not original:
        return None
    return plugin_id, original


def unknown_resource(uri: str) -> MCPError:
    return MCPError(
        types.INVALID_PARAMS,
        f"Unknown resource: '{uri}'. resources/list and resources/templates/list show this key's organisation's "
        f"resources, named {URI_PREFIX}<plugin-id>/<the server's URI>.",
    )


@dataclass(frozen=True, slots=True)
class Server:
    """One MCP plugin of the organisation, with the connection serving it for that organisation."""

    ref: PluginRef
    connection: McpConnection

    @property
    def plugin_id(self) -> str:
        return self.ref.id


async def servers_of(mcp: Any, organisation: OrganisationConfig) -> list[Server]:
    """The organisation's MCP plugins whose servers are up (or coming back), in configuration order."""
    refs = [ref for ref in organisation.plugins if ref.mcp is not None]
    if mcp is None or not refs:
        return []
    connections = await asyncio.gather(*(mcp.connection_for(ref, organisation=organisation.id) for ref in refs))
    return [Server(ref, connection) for ref, connection in zip(refs, connections, strict=True) if connection.offering_cached()]


def server_named(servers: Sequence[Server], plugin_id: str) -> Server | None:
    return next((server for server in servers if server.plugin_id == plugin_id), None)


# -- resources -----------------------------------------------------------------------------------


def resources(servers: Sequence[Server]) -> list[types.Resource]:
    return [
        resource.model_copy(
            update={"uri": public_uri(server.plugin_id, str(resource.uri)), "name": public_name(server.plugin_id, resource.name)}
        )
        for server in servers
        for resource in server.connection.resources
    ]


def templates(servers: Sequence[Server]) -> list[types.ResourceTemplate]:
    return [
        template.model_copy(
            update={
                "uri_template": public_uri(server.plugin_id, template.uri_template),
                "name": public_name(server.plugin_id, template.name),
            }
        )
        for server in servers
        for template in server.connection.resource_templates
    ]


def _prefixed_contents(plugin_id: str, contents: Any) -> Any:
    return contents.model_copy(update={"uri": public_uri(plugin_id, str(contents.uri))})


def read_result(plugin_id: str, result: types.ReadResourceResult) -> types.ReadResourceResult:
    """A server's read result with its contents' URIs as ``/mcp`` names them."""
    return result.model_copy(update={"contents": [_prefixed_contents(plugin_id, c) for c in result.contents]})


def prefixed_block(plugin_id: str, block: Any) -> Any:
    """A content block whose resource link or embedded resource points where ``/mcp`` serves it."""
    if isinstance(block, types.ResourceLink):
        return block.model_copy(update={"uri": public_uri(plugin_id, str(block.uri))})
    if isinstance(block, types.EmbeddedResource):
        return block.model_copy(update={"resource": _prefixed_contents(plugin_id, block.resource)})
    return block


# -- prompts -------------------------------------------------------------------------------------


def prompts(servers: Sequence[Server]) -> list[types.Prompt]:
    return [
        prompt.model_copy(update={"name": public_name(server.plugin_id, prompt.name)})
        for server in servers
        for prompt in server.connection.prompts
    ]


def prompt_named(servers: Sequence[Server], name: str) -> tuple[Server, str] | None:
    """(server, the server's own prompt name) of a ``/mcp`` prompt name."""
    for server in servers:
        for prompt in server.connection.prompts:
            if public_name(server.plugin_id, prompt.name) == name:
                return server, prompt.name
    return None


def prompt_result(plugin_id: str, result: types.GetPromptResult) -> types.GetPromptResult:
    messages = [
        message.model_copy(update={"content": prefixed_block(plugin_id, message.content)}) for message in result.messages
    ]
    return result.model_copy(update={"messages": messages})


def page(items: list[Any], cursor: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of ``items``; the cursor is the index where the page starts."""
    start = 0
    if cursor:
        try:
            start = int(cursor)
        except ValueError:
            raise MCPError(types.INVALID_PARAMS, "The cursor is not one this server gave: list again from the start.") from None
    end = start + size
    return items[start:end], str(end) if end < len(items) else None
