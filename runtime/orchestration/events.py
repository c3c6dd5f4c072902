"""What one run of the orchestration loop tells its front door, in order.

The loop (``runtime.orchestration.loop``) yields these events; every front door
(chat completions, Responses, Messages, the WhatsApp worker) is an encoder from
this sequence to its own wire format, and a non-streamed answer is the same
sequence folded. A run always ends with exactly one :class:`Completed`.

Streamed rounds yield a :class:`ModelChunk` per upstream chunk and then the
round's :class:`ModelTurn`; non-streamed rounds yield only the
:class:`ModelTurn`, which then carries the provider's whole ``response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.json_types import JSON


@dataclass(slots=True)
class ModelChunk:
    """One ``chat.completion.chunk`` from the provider, as received (model already rewritten)."""

    round: int
    chunk: JSON

    @property
    def text(self) -> str:
        """The content delta of choice 0 ("" when the chunk carries none)."""
        for choice in self.chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                return (choice.get("delta") or {}).get("content") or ""
        return ""


@dataclass(slots=True)
class ModelTurn:
    """The model's complete answer in one round: its message, why it stopped, what it used."""

    round: int
    message: JSON
    finish_reason: str | None
    usage: JSON | None
    # The provider's chat.completion, for non-streamed rounds only.
    response: JSON | None = None


@dataclass(slots=True)
class ToolsOffered:
    """The server-side tools of this run, by plugin, before the first round (Responses' mcp_list_tools)."""

    tools: list[OfferedTool]


@dataclass(slots=True, frozen=True)
class OfferedTool:
    plugin_id: str
    tool_name: str  # the tool's own name inside its plugin (an MCP server's name)
    public_name: str  # the name the model sees
    description: str
    parameters: JSON
    annotations: JSON | None = None


@dataclass(slots=True)
class ToolCallStarted:
    round: int
    call_id: str
    name: str  # the public name the model used
    plugin_id: str | None  # None for an unknown tool
    tool_name: str | None
    arguments: str  # the raw JSON string the model sent
    # The gateway's own tool (tool search), not a plugin's: front doors may leave it out.
    builtin: bool = False
    # Code mode: the script this call runs (a script run), or the script run that made this call.
    script: str | None = None
    parent_call_id: str | None = None


@dataclass(slots=True)
class ToolProgress:
    """A long-running tool reported progress (MCP ``notifications/progress``)."""

    round: int
    call_id: str
    progress: float
    total: float | None = None
    message: str | None = None

    def report(self) -> dict[str, Any]:
        """What every front door's stream says of it (``: plugway tool_progress {...}``)."""
        return {"round": self.round, "call_id": self.call_id, "progress": self.progress, "total": self.total, "message": self.message}


@dataclass(slots=True)
class ToolCallFinished:
    round: int
    call_id: str
    name: str
    plugin_id: str | None
    tool_name: str | None
    arguments: str
    ok: bool
    content: str  # what the model reads (already capped)
    duration_ms: float
    error: str | None = None
    # Binary results the front door may pass to the model as images: (mime type, base64 data).
    images: list[tuple[str, str]] = field(default_factory=list)
    # ... and as sounds: (mime type, base64 data).
    audio: list[tuple[str, str]] = field(default_factory=list)
    builtin: bool = False
    # Code mode: a script run carries its script, what it printed and the tool calls it made;
    # each of those calls names the script run that made it.
    script: str | None = None
    output: str | None = None
    calls: list[ToolCallFinished] = field(default_factory=list)
    parent_call_id: str | None = None

    def trace(self) -> JSON:
        entry: JSON = {"round": self.round, "name": self.name, "duration_ms": round(self.duration_ms, 2), "ok": self.ok}
        if self.error:
            entry["error"] = self.error
        if self.script is not None:
            entry["calls"] = [call.trace() for call in self.calls]
        return entry


@dataclass(slots=True)
class ApprovalRequired:
    """The model called tools that need the client's approval; the run ends without running them."""

    round: int
    calls: list[PendingCall]
    # The assistant turn holding the calls, kept so that a later run can resume it.
    assistant_message: JSON


@dataclass(slots=True, frozen=True)
class PendingCall:
    call_id: str
    name: str
    plugin_id: str
    tool_name: str
    arguments: str


@dataclass(slots=True)
class Completed:
    """The run's end: the final assistant message, summed usage and the trace.

    ``stopped_by``: ``answer`` (the model answered), ``client_tools`` (it called
    the client's own tools, which go back to the client), ``approval`` (tools
    wait for approval), ``max_tool_rounds`` or ``repeated_call`` (a final round
    without tools answered).
    """

    message: JSON
    finish_reason: str
    usage: JSON
    trace: JSON
    stopped_by: str
    # The final round's provider response, when it was not streamed.
    response: JSON | None = None
    # The whole conversation as the model saw it, with the final answer appended
    # (OpenAI chat messages): stored by front doors that continue conversations.
    messages: list[JSON] = field(default_factory=list)


Event = (
    ModelChunk
    | ModelTurn
    | ToolsOffered
    | ToolCallStarted
    | ToolProgress
    | ToolCallFinished
    | ApprovalRequired
    | Completed
)
