"""What a tool is, to the orchestration loop.

Python plugins and MCP servers both end up as :class:`ToolSpec` objects: a name
inside their plugin, a description, a JSON schema for the arguments, and an
``invoke`` coroutine. The loop neither knows nor cares where a tool came from.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_type_hints

import anyio.to_thread
from pydantic import ConfigDict, create_model


class ToolError(Exception):
    """Raise from a tool to tell the model what went wrong; the message is shown to it."""


@dataclass(frozen=True)
class ToolMedia:
    """Base64 ``data`` of ``mime_type`` that a tool returns, optionally named."""

    KIND: ClassVar[str]

    mime_type: str
    data: str
    name: str | None = None

    @property
    def size(self) -> int:
        """Decoded size in bytes, without decoding."""
        return len(self.data.rstrip("=")) * 3 // 4

    def describe(self) -> str:
        named = f" '{self.name}'" if self.name else ""
        return f"[{self.KIND}{named}: {self.mime_type}, {self.size} bytes]"


@dataclass(frozen=True)
class ToolImage(ToolMedia):
    """An image a tool returns: base64 ``data`` of ``mime_type``."""

    KIND: ClassVar[str] = "image"


@dataclass(frozen=True)
class ToolAudio(ToolMedia):
    """A sound a tool returns: base64 ``data`` of ``mime_type`` (``audio/wav``, ``audio/mpeg``, ...)."""

    KIND: ClassVar[str] = "audio"


@dataclass(frozen=True)
class ToolResult:
    """A result with images besides text.

    The model always reads ``text``; where the provider can show a model images in
    a tool result (Anthropic), the images go along, and elsewhere ``text`` carries
    a short description of each instead (never the base64).
    """

    text: str
    images: tuple[ToolImage, ...] = ()
    # Sounds go to models that can hear them (``models[].audio``), as images go to those that see.
    audio: tuple[ToolAudio, ...] = ()


@dataclass(frozen=True)
class SamplingRequest:
    """A tool asks the request's model for a completion (MCP sampling), in OpenAI chat terms."""

    messages: list[dict[str, Any]]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    model_hint: str | None = None


@dataclass(frozen=True)
class SamplingResult:
    text: str
    model: str
    stop_reason: str  # "endTurn", "maxTokens" or "stopSequence", as MCP names them
    prompt_tokens: int = 0
    completion_tokens: int = 0


Sampler = Callable[[SamplingRequest], Awaitable[SamplingResult]]
# Ask the person behind the request (MCP elicitation): the request's params as MCP spells
# them (``mode`` "form" with ``message`` and ``requestedSchema``, or "url" with ``message``,
# ``url`` and ``elicitationId``) in, the answer (``action``, ``content``) out.
Elicitor = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
ProgressReporter = Callable[[float, float | None, str | None], None]
# (message, url) -> whether the person opened it and finished there.
UrlPrompt = Callable[[str, str], Awaitable[bool]]


def _ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass(frozen=True)
class ToolContext:
    """Injected into a tool's keyword-only ``ctx`` parameter; never shown to the model."""

    organisation_id: str
    plugin_id: str
    request_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("plugway.tools"))
    # Report progress (done, total, message): each report extends the call's deadline,
    # up to ``orchestration.tool_max_s``, and reaches streaming clients.
    progress: ProgressReporter = _ignore_progress
    # Ask the request's model for a completion (no tools), within the call's sampling
    # budget; None where no model is available (raise ToolError or decline then).
    sample: Sampler | None = None
    # Ask the person behind the request (an MCP server's elicitation); None where there is
    # nobody to ask (inside the loop, or a /mcp client without the elicitation capability).
    elicit: Elicitor | None = None
    # The person the request acts for, when the request identifies one (its `user` or
    # `safety_identifier`, an endpoint session's user, a WhatsApp contact, the OAuth subject
    # on /mcp): an MCP server authorized per end user runs the call with their token.
    end_user: str | None = None
    # Show a person a link to open and wait for them (MCP URL elicitation on /mcp): True once
    # they say they have. None where nobody can be asked inside the call.
    ask_user_to_open: UrlPrompt | None = None


Invoke = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass
class ToolSpec:
    """A tool as offered to the model (before ``<plugin-id>__`` naming)."""

    plugin_id: str
    name: str
    description: str
    parameters: dict[str, Any]
    invoke: Invoke
    source: str = "python"  # "python" or "mcp"
    # MCP tool annotations (readOnlyHint, destructiveHint, ...): an MCP server's, or a
    # Python plugin's ``register(fn, annotations={...})``.
    annotations: dict[str, Any] | None = None


def tool_from_function(
    plugin_id: str, fn: Callable[..., Any], *, name: str | None = None, annotations: dict[str, Any] | None = None
) -> ToolSpec:
    """Build a ToolSpec from a plain typed function.

    The name is ``fn.__name__``, the description its docstring, the schema comes
    from the signature through pydantic. A keyword-only ``ctx`` parameter is
    injected at call time and left out of the schema. Sync functions run in a
    worker thread so they never block the event loop.
    """
    signature = inspect.signature(fn)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    wants_ctx = False
    for param in signature.parameters.values():
        if param.name == "ctx":
            wants_ctx = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args and **kwargs are not supported")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    arguments_model = create_model(  # type: ignore[call-overload]
        f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    schema = arguments_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    description = inspect.cleandoc(fn.__doc__ or "").strip() or fn.__name__.replace("_", " ")

    is_async = inspect.iscoroutinefunction(fn)

    async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        validated = arguments_model.model_validate(arguments)
        kwargs = {name: getattr(validated, name) for name in fields}
        if wants_ctx:
            kwargs["ctx"] = ctx
        if is_async:
            return await fn(**kwargs)
        return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs), abandon_on_cancel=True)

    return ToolSpec(
        plugin_id=plugin_id,
        name=name or fn.__name__,
        description=description,
        parameters=schema,
        invoke=invoke,
        annotations=annotations,
    )
