"""Resources as a tool: ``<plugin>__read_resource(uri)`` for servers that offer resources.

Tool results often hold resource links (``[resource link: name <uri>]``); with
this tool the model can follow them. When a server lists few resources, the
tool's description names them, so the model can also read them unprompted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp_types import (
    BlobResourceContents,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextResourceContents,
)

from runtime.mcp.results import blob_text, decoded_size, resource_name
from runtime.plugin_host.tool import ToolAudio, ToolImage, ToolResult
from runtime.text import truncate

READ_RESOURCE_TOOL = "read_resource"
# Above this many resources the description says how many there are instead of listing them.
LISTED_IN_DESCRIPTION = 20
_ENTRY_CHARS = 120

READ_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "uri": {"type": "string", "description": "The resource's URI, as listed or as a resource link gave it."},
    },
    "required": ["uri"],
    "additionalProperties": False,
}


def _entry(uri: str, name: str | None, description: str | None) -> str:
    label = f"{uri} ({name})" if name and name != uri else uri
    if description:
        label = f"{label}: {' '.join(description.split())}"
    return label if len(label) <= _ENTRY_CHARS else label[: _ENTRY_CHARS - 1] + "…"


def read_resource_description(
    plugin_id: str, resources: Sequence[Resource], templates: Sequence[ResourceTemplate]
) -> str:
    lines = [
        f"Read a resource of the '{plugin_id}' server by its URI: a document, file or record it "
        "offers. Resource links in this server's tool results name such URIs."
    ]
    if resources and len(resources) <= LISTED_IN_DESCRIPTION:
        lines.append("Resources:")
        lines += [f"- {_entry(str(r.uri), r.name, r.description)}" for r in resources]
    elif resources:
        lines.append(f"The server offers {len(resources)} resources.")
    if templates:
        lines.append("URI templates (fill in the {placeholders}):")
        lines += [f"- {_entry(t.uri_template, t.name, t.description)}" for t in templates[:LISTED_IN_DESCRIPTION]]
    return "\n".join(lines)


def render_resource(result: ReadResourceResult, max_chars: int) -> str | ToolResult:
    """A resource's contents as model-readable text, with images and sounds beside it."""
    parts: list[str] = []
    images: list[ToolImage] = []
    sounds: list[ToolAudio] = []
    several = len(result.contents) > 1
    for contents in result.contents:
        uri = str(contents.uri)
        if isinstance(contents, TextResourceContents):
            parts.append(f"[resource: {uri}]\n{contents.text}" if several else contents.text)
        elif isinstance(contents, BlobResourceContents):
            mime = contents.mime_type or "application/octet-stream"
            if mime.startswith("image/"):
                images.append(ToolImage(mime_type=mime, data=contents.blob, name=resource_name(uri)))
            elif mime.startswith("audio/"):
                sounds.append(ToolAudio(mime_type=mime, data=contents.blob, name=resource_name(uri)))
            elif (text := blob_text(contents.blob, mime)) is not None:
                parts.append(f"[resource: {uri}]\n{text}" if several else text)
            else:
                parts.append(f"[resource: {uri}, {mime}, {decoded_size(contents.blob)} bytes]")
    text = "\n".join(parts)
    if not text and not images and not sounds:
        text = "(the resource is empty)"
    text = truncate(text, max_chars)
    return ToolResult(text=text, images=tuple(images), audio=tuple(sounds)) if images or sounds else text
