"""Turn an MCP ``CallToolResult`` into what the model reads: text, and images beside it.

- Text blocks are joined. A text block that is a JSON object holding nothing but
  one ``content`` (or ``text``) string is that string: the model should read the
  text, not its escaped JSON spelling.
- Images (and embedded image resources) become :class:`ToolImage` objects on a
  :class:`ToolResult`, audio (and embedded audio resources) :class:`ToolAudio`
  objects: the loop passes them to models that can see (hear) them and as a
  short description elsewhere. Binary data never reaches the model as text:
  other blobs are described (type, size, name). A
  blob whose MIME type is textual (``text/*``, JSON, XML, YAML, CSV…) is text
  sent base64-encoded, and reaches the model decoded.
- ``structuredContent`` is preferred when the result carries no binary content
  (servers also send the same data as a text block, which would only repeat
  it). With binary content the blocks win, since servers repeat the blob in
  ``structuredContent`` too; any base64 left in structured data is replaced by
  a description anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from runtime.plugin_host.tool import ToolAudio, ToolImage, ToolMedia, ToolResult
from runtime.text import truncate

Media = TypeVar("Media", bound=ToolMedia)

# Long unbroken base64 (or a base64 data: URL) inside structured data is a blob, not prose.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/\r\n]{200,}={0,2}")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]*)*;base64,", re.IGNORECASE)
_WRAPPER_KEYS = ("content", "text")
# Blobs of these types are text in base64 (servers send files they read as blobs).
_TEXTUAL_MIME = re.compile(
    r"(text/[\w.+-]+|application/(json|ld\+json|xml|yaml|x-yaml|toml|javascript|x-sh|sql|x-ndjson|csv)"
    r"|[\w.-]+/[\w.-]+\+(json|xml|yaml))\s*(;.*)?",
    re.IGNORECASE,
)
# A textual blob is decoded up to this many bytes; the result cap cuts the text later anyway.
TEXT_BLOB_BYTES = 1_000_000


def decoded_size(b64: str) -> int:
    """Bytes encoded by a base64 string, without decoding it."""
    stripped = b64.strip().rstrip("=")
    return len(stripped) * 3 // 4


def blob_text(blob: str, mime: str) -> str | None:
    """A textual blob's text (UTF-8, undecodable bytes replaced); None for binary or bad base64."""
    if not _TEXTUAL_MIME.fullmatch(mime):
        return None
    encoded = "".join(blob.split())
    kept = encoded[: TEXT_BLOB_BYTES // 3 * 4]
    try:
        raw = base64.b64decode(kept, validate=True)
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", errors="replace")
    if len(kept) < len(encoded):
        text += f"\n[… {decoded_size(encoded) - len(raw)} more bytes not shown]"
    return text


def resource_name(uri: str) -> str | None:
    """The last path segment of a resource URI, as a readable name."""
    parts = urlsplit(uri)
    # "images://chart.png" keeps its name where a host would be.
    return PurePosixPath(parts.path).name or parts.netloc or None


def image_of(block: Any) -> ToolImage | None:
    """The image a content block carries, if it carries one."""
    return _media_of(block, ImageContent, ToolImage)


def audio_of(block: Any) -> ToolAudio | None:
    """The sound a content block carries, if it carries one."""
    return _media_of(block, AudioContent, ToolAudio)


def _media_of(block: Any, content: type[ImageContent | AudioContent], media: type[Media]) -> Media | None:
    """``media`` from its own content block, or from an embedded blob of its kind (``image/...``)."""
    if isinstance(block, content):
        return media(mime_type=block.mime_type, data=block.data)
    if isinstance(block, EmbeddedResource) and isinstance(block.resource, BlobResourceContents):
        mime = block.resource.mime_type or ""
        if mime.startswith(media.KIND + "/"):
            return media(mime_type=mime, data=block.resource.blob, name=resource_name(str(block.resource.uri)))
    return None


def _unwrap_text(text: str) -> str:
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return text
    try:
        value = json.loads(stripped)
    except ValueError:
        return text
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key in _WRAPPER_KEYS and isinstance(inner, str):
            return inner
    return text


def summarise_block(block: Any) -> str:
    """One non-image content block as text; binary content as a bracketed description."""
    if isinstance(block, TextContent):
        return _unwrap_text(block.text)
    if isinstance(block, ImageContent):
        return f"[image: {block.mime_type}, {decoded_size(block.data)} bytes]"
    if isinstance(block, AudioContent):
        return f"[audio: {block.mime_type}, {decoded_size(block.data)} bytes]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return f"[resource: {resource.uri}]\n{resource.text}"
        if isinstance(resource, BlobResourceContents):
            mime = resource.mime_type or "application/octet-stream"
            text = blob_text(resource.blob, mime)
            if text is not None:
                return f"[resource: {resource.uri}]\n{text}"
            return f"[resource: {resource.uri}, {mime}, {decoded_size(resource.blob)} bytes]"
        return f"[resource: {getattr(resource, 'uri', '?')}]"
    if isinstance(block, ResourceLink):
        described = f": {block.description}" if block.description else ""
        return f"[resource link: {block.name} <{block.uri}>{described}]"
    kind = getattr(block, "type", type(block).__name__)
    return f"[{kind} content]"


def render_content(blocks: Iterable[Any], *, skip_text: bool = False) -> tuple[str, list[ToolImage], list[ToolAudio]]:
    """The blocks' text (images and sounds left out of it), their images and their sounds."""
    parts: list[str] = []
    images: list[ToolImage] = []
    sounds: list[ToolAudio] = []
    for block in blocks:
        image = image_of(block)
        sound = audio_of(block) if image is None else None
        if image is not None:
            images.append(image)
        elif sound is not None:
            sounds.append(sound)
        elif not (skip_text and isinstance(block, TextContent)):
            parts.append(summarise_block(block))
    return "\n".join(part for part in parts if part), images, sounds


def _is_binary(block: Any) -> bool:
    if isinstance(block, ImageContent | AudioContent):
        return True
    return isinstance(block, EmbeddedResource) and isinstance(block.resource, BlobResourceContents)


def _looks_encoded(value: str) -> bool:
    # Encoded bytes use most of the alphabet in both cases and digits; "yyyy…" or a
    # long word does not.
    sample = value[:1000]
    return (
        len(set(sample)) >= 32
        and any(c.isdigit() for c in sample)
        and any(c.isupper() for c in sample)
        and any(c.islower() for c in sample)
    )


def scrub_binary(value: Any) -> Any:
    """``value`` with every base64 blob (or data: URL) replaced by a description of it."""
    if isinstance(value, str):
        if len(value) < 200:
            return value
        data_url = _DATA_URL.match(value)
        if data_url is not None:
            mime = data_url.group(1) or "binary data"
            return f"[{mime}, {decoded_size(value[data_url.end():])} bytes, not shown]"
        if _BASE64_RUN.fullmatch(value) and _looks_encoded(value):
            return f"[binary data, {decoded_size(value)} bytes, not shown]"
        return value
    if isinstance(value, dict):
        return {key: scrub_binary(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [scrub_binary(inner) for inner in value]
    return value


def _unwrap_structured(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        # SDK servers wrap a primitive return value as {"result": value}: protocol plumbing.
        if key == "result":
            return inner
        if key in _WRAPPER_KEYS and isinstance(inner, str):
            return inner
    return value


def render_result(result: CallToolResult, max_chars: int) -> str | ToolResult:
    """What the model reads of a tool result: text capped at ``max_chars``, with its images."""
    images: list[ToolImage] = []
    sounds: list[ToolAudio] = []
    binary = any(_is_binary(block) for block in result.content)
    if result.structured_content is not None and not result.is_error and not binary:
        structured = scrub_binary(_unwrap_structured(result.structured_content))
        if isinstance(structured, str):
            text = structured
        else:
            text = json.dumps(structured, ensure_ascii=False, separators=(", ", ": "))
        extras, _, _ = render_content(result.content, skip_text=True)
        if extras:
            text = f"{text}\n{extras}"
    else:
        text, images, sounds = render_content(result.content)
    if not text and not images and not sounds:
        text = "The tool reported an error without details." if result.is_error else "(no output)"
    text = truncate(text, max_chars)
    if (images or sounds) and not result.is_error:
        return ToolResult(text=text, images=tuple(images), audio=tuple(sounds))
    if images or sounds:
        # An error result is read as a message: its images and sounds are only described.
        described = "\n".join([*(image.describe() for image in images), *(sound.describe() for sound in sounds)])
        return truncate(f"{text}\n{described}" if text else described, max_chars)
    return text


def result_text(result: str | ToolResult) -> str:
    """A rendered result as plain text (images described), for surfaces that show text only."""
    if isinstance(result, str):
        return result
    described = [*(image.describe() for image in result.images), *(sound.describe() for sound in result.audio)]
    return "\n".join(part for part in (result.text, *described) if part)
