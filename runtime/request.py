"""The request's types: what admission decides, what a run carries and what it leaves behind.

A leaf module. It imports configuration, limit and storage types, the
guardrails engine (text in, text out) and the loop's event dataclasses, and
nothing that decides or does anything: admission (``runtime.admission``), the
loop (``runtime.orchestration``), providers, accounting and every front door
import it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from runtime.config import ModelConfig, OrganisationConfig, PluginRef
from runtime.guardrails import Finding, Guardrails
from runtime.json_types import JSON
from runtime.limits.decision import UNLIMITED, LimitDecision
from runtime.limits.reservation import Reservation, estimated_tokens
from runtime.limits.usage import checked_usage
from runtime.orchestration.events import Completed, Event
from runtime.storage.keys import KeyInfo

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# ``RequestContext.extra``: the model name the client sent, when it was an alias.
REQUESTED_MODEL = "requested_model"


@dataclass(frozen=True, slots=True)
class DoorRules:
    """What one entry point asks of admission, as data: admission never compares door names.

    ``source`` labels the usage record, metrics and logs. ``scope`` is the key
    scope the call needs. ``guardrails_default``: the organisation's
    ``guardrails_default`` apply (the OpenAI- and Anthropic-compatible routes).
    ``can_ask_approval``: the door can stop a run for a person's approval
    (OpenAI's ``mcp_approval_request``). ``budget`` and ``limits``: the call is
    refused past the organisation's budget, and takes from the key's limits
    (``rpm`` False: only the daily-token cap, for work inside an admitted call).
    ``produces_output``: the model writes an answer, so the call holds room for one
    (embeddings do not). ``billed``: accounting settles the call, so admission holds
    its most of the budget and daily tokens until then (``count_tokens`` is never billed).
    """

    source: str
    scope: str = "chat"
    guardrails_default: bool = False
    can_ask_approval: bool = False
    budget: bool = True
    limits: bool = True
    rpm: bool = True
    produces_output: bool = True
    billed: bool = True

    def named(self, source: str) -> DoorRules:
        """The same rules under another usage label (an endpoint called from the console, the CLI, WhatsApp)."""
        return replace(self, source=source)


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Which of a plugin's tools wait for the client's approval before they run.

    OpenAI's hosted-MCP ``require_approval``: ``"always"`` / ``"never"``, or tool
    names listed under ``always`` / ``never`` (the rest follow ``default``).
    """

    default: bool = False
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def required(self, tool_name: str) -> bool:
        if tool_name in self.always:
            return True
        if tool_name in self.never:
            return False
        return self.default


NO_APPROVAL = ApprovalPolicy()


@dataclass(frozen=True, slots=True)
class PluginGrant:
    """One plugin whose tools this request may run on the server, as the request narrowed it."""

    ref: PluginRef
    allowed_tools: frozenset[str] | None = None  # by the tool's own name; None: every tool
    approval: ApprovalPolicy = NO_APPROVAL

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (self.ref.id, self.allowed_tools, self.approval)


@dataclass(frozen=True, slots=True)
class PluginRequest:
    """A front door's request for one plugin (``enabled_plugin_ids``, an MCP tool entry, ...)."""

    plugin_id: str
    param: str  # where the request named it, for the 400 that names the field
    allowed_tools: frozenset[str] | None = None
    approval: ApprovalPolicy = NO_APPROVAL


@dataclass(slots=True)
class RequestContext:
    """One admitted request: who asks, for which model, with which server-side plugins."""

    request_id: str
    organisation: OrganisationConfig
    model: ModelConfig
    key: KeyInfo | None
    door: DoorRules
    plugins: tuple[PluginGrant, ...]  # () means the loop offers no server-side tools
    limits: LimitDecision = UNLIMITED
    endpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The guardrails in force (None: none); the input stage may already be done (endpoints).
    guardrails: Guardrails | None = None
    guard_input: bool = True
    # billing: what admission held for this request until accounting settles it (runtime/limits/reservation.py).
    reservation: Reservation | None = None
    # The person the request acts for (see ToolContext.end_user); the loop takes the body's
    # `user` / `safety_identifier` when the door set none.
    end_user: str | None = None

    @property
    def source(self) -> str:
        return self.door.source

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    @property
    def can_ask_approval(self) -> bool:
        """Whether the front door can stop a run for a person's approval (OpenAI's mcp_approval_request)."""
        return self.door.can_ask_approval

    @property
    def track_tokens(self) -> bool:
        """Whether the key's daily-token counter must learn what this request used."""
        return self.key is not None and self.key.daily_tokens is not None


@dataclass(slots=True)
class ToolsContext:
    """An admitted request to run plugin tools directly (``/mcp``, the management API): no model."""

    request_id: str
    organisation: OrganisationConfig
    key: KeyInfo | None
    door: DoorRules
    plugins: tuple[PluginGrant, ...]
    limits: LimitDecision = UNLIMITED
    # The person the calls act for (on /mcp: the OAuth subject), for per-user MCP servers.
    end_user: str | None = None

    @property
    def source(self) -> str:
        return self.door.source

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    def with_model(self, model: ModelConfig, door: DoorRules) -> RequestContext:
        """This call as a model request (an MCP server's sampling through its ``sampling_model``)."""
        return RequestContext(
            request_id=self.request_id, organisation=self.organisation, model=model, key=self.key, door=door, plugins=()
        )


@dataclass
class RouteLog:
    """What the router did for one request: served by, and failed attempts (safe messages only)."""

    provider: str | None = None
    model: str | None = None
    attempts: list[JSON] = field(default_factory=list)
    request_id: str | None = None  # sent upstream as X-Request-Id
    organisation: str | None = None  # whose circuit breakers the attempts count against


@dataclass(slots=True)
class Resume:
    """Continue a run that stopped for approvals: the assistant turn, and the client's decisions."""

    assistant_message: JSON
    approvals: dict[str, bool]  # call id -> approved


@dataclass(slots=True)
class RunRequest:
    body: JSON  # an OpenAI chat-completions body: messages, parameters, the client's own tools
    stream: bool = False
    resume: Resume | None = None
    # The request's orchestration mode (classic, code, auto); None: the configuration decides.
    mode: str | None = None


@dataclass
class RunState:
    """Everything known about a run so far; read by usage accounting even if the run is abandoned."""

    request_id: str
    model: str
    orchestrated: bool = False
    rounds: int = 0
    usage: JSON = field(default_factory=lambda: {k: 0 for k in USAGE_KEYS})
    tool_calls: list[JSON] = field(default_factory=list)  # trace entries of finished calls
    tools_started: int = 0
    stopped_by: str | None = None
    route: RouteLog = field(default_factory=RouteLog)
    # Characters streamed in the current upstream round whose usage has not arrived yet.
    unbilled_chars: int = 0
    # What the run is doing now: "model" (an upstream round), "tools", or "idle".
    phase: str = "idle"
    # Tools the model found with the tool search, offered from the next round on.
    loaded_tools: list[str] = field(default_factory=list)
    # What the guardrails found, by stage (recorded with the usage, never the content).
    guardrail_hits: list[tuple[str, list[Finding]]] = field(default_factory=list)
    tool_search: bool = False
    code_mode: bool = False
    # The organisation the run is for (its own provider circuit breakers).
    organisation: str | None = None

    def __post_init__(self) -> None:
        self.route.request_id = self.request_id
        self.route.organisation = self.organisation

    def round_started(self) -> None:
        """An upstream round begins: a client that leaves now lets it finish, to bill what it really used."""
        self.phase = "model"

    def round_finished(self, usage: JSON | None = None, *, prompt: Any = None, output: Any = None) -> JSON | None:
        """An upstream round ended; ``usage`` is what it reported (None: already added chunk by chunk)."""
        self.rounds += 1
        self.phase = "idle"
        return self.add_usage(usage, prompt=prompt, output=output)

    def answered(self, usage: JSON | None = None, *, prompt: Any = None, output: Any = None) -> JSON | None:
        """A single-round call (native Messages, embeddings, sampling) got its answer."""
        counted = self.round_finished(usage, prompt=prompt, output=output)
        self.stopped_by = "answer"
        return counted

    def add_usage(self, usage: JSON | None, *, prompt: Any = None, output: Any = None) -> JSON | None:
        """Add an upstream call's usage, checked first (``runtime.limits.usage.checked_usage``): an
        invalid count is replaced by an estimate from ``prompt`` (the request) and the answer's
        text (``output``, or what this round streamed). Returns the usage as counted."""
        if not usage:
            return None
        usage = checked_usage(usage, prompt=prompt, output_chars=self.unbilled_chars, output=output, request_id=self.request_id)
        self.unbilled_chars = 0
        for key in USAGE_KEYS:
            self.usage[key] += usage[key]
        for detail in ("prompt_tokens_details", "completion_tokens_details"):
            details = usage.get(detail)
            for name, value in (details if isinstance(details, dict) else {}).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    bucket = self.usage.setdefault(detail, {})
                    bucket[name] = bucket.get(name, 0) + value
        return usage

    def count_unbilled(self) -> None:
        """The round's usage never arrived (the stream broke, the client left): count what it streamed."""
        if self.unbilled_chars:
            estimate = estimated_tokens(self.unbilled_chars)
            self.usage["completion_tokens"] += estimate
            self.usage["total_tokens"] += estimate
            self.unbilled_chars = 0

    def trace(self) -> JSON:
        trace: JSON = {
            "orchestrated": self.orchestrated,
            "rounds": self.rounds,
            "tool_calls": self.tool_calls,
            "stopped_by": self.stopped_by,
            "provider": self.route.provider,
            "served_model": self.route.model,
        }
        if self.route.attempts:
            trace["failed_attempts"] = self.route.attempts
        if self.tool_search:
            trace["loaded_tools"] = self.loaded_tools
        if self.code_mode:
            trace["mode"] = "code"
        return trace


class KeepAlive:
    """Nothing happened for ``keepalive_s``: front doors send their keep-alive (an SSE comment, a ping)."""


KEEP_ALIVE = KeepAlive()


@dataclass
class RunResult:
    """A finished non-streamed run: its events in order (no chunks) and its state."""

    events: list[Event]
    state: RunState

    @property
    def completed(self) -> Completed:
        last = self.events[-1]
        assert isinstance(last, Completed)
        return last

    @property
    def text(self) -> str:
        return str(self.completed.message.get("content") or "")

    @property
    def usage(self) -> JSON:
        return self.state.usage
