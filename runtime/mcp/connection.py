"""One long-lived connection to one MCP server, owned by one task.

The SDK's client holds task groups, so it must be entered and exited in the
same task: :meth:`McpConnection._own` is that task. It connects, publishes the
session while it holds it open, and waits until the connection breaks or the
manager closes it; then it reconnects with exponential backoff. Request tasks
use the published session directly: a request/response exchange may be sent
from any task, and if a request task is cancelled (the tool timed out, the
client went away) the SDK sends ``notifications/cancelled`` to the server and
the connection stays usable.

Reconnect policy: a connection that was up and drops is retried at once (a
crash, a restart: the next call should just work); consecutive failures back
off from ``backoff_initial_s`` doubling to ``backoff_max_s``. A connection that
stayed up ``stable_after_s`` forgets its earlier failures. While a server that
was up is coming back, its cached tool list is still offered (for at most
``offline_grace_s``), and a call waits for the connection attempt: it proceeds
if the attempt succeeds and fails as a tool error if it does not. Once an
attempt has failed the server is down: it offers nothing, and calls fail at
once with the reason, until an attempt succeeds. HTTP servers are checked every
``ping_interval_s``, since a stateless (2026) one holds no stream that would
notice its death.

Over streamable HTTP, a server that forgot our session (it restarted) answers
404, or 400 naming the session: the connection starts a new session at once,
and the call that met the refusal is sent again, once, on the new session.

What a call carries: a progress token (every progress notification reaches
``ctx.progress``, which moves the call's deadline and reaches streaming
clients); its ``ToolContext`` for the server's sampling requests, which are
answered through ``ctx.sample`` of the call they belong to, and only of that
call (see :meth:`McpConnection.serves_one_call_at_a_time`); likewise its
elicitation requests go to ``ctx.elicit`` of their call (a call made through
``/mcp`` by a client that can ask a person), and are declined everywhere else.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import json
import logging
import math
import shlex
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from runtime.config import McpConfig
from runtime.mcp.http import BearerAuth, HttpWatch, watched_http_client
from runtime.mcp.process import ChildProcessTransport
from runtime.mcp.results import render_result, result_text
from runtime.mcp.sampling import SamplingRefused, sampling_request, sampling_result
from runtime.plugin_host.tool import ToolContext, ToolError, ToolResult
from runtime.telemetry.mcp import traceparent_header
from runtime.text import mask_credentials

logger = logging.getLogger("plugway.mcp")

_MAX_LIST_PAGES = 100
_CLIENT_INFO = mcp_types.Implementation(name="plugway", version="0.1.0")
_ELICITATION_REFUSAL = (
    "plugway has no person to ask for this call (an automated loop, or an MCP client that cannot "
    "elicit): elicitation is declined. Proceed without it or fail with a message the model can read."
)
NO_MODEL_FOR_SAMPLING = (
    "No model is available to answer sampling requests for this call, so plugway declines it."
)
TASKS_UNSUPPORTED = (
    "it must run as an MCP task (execution.taskSupport 'required'), which plugway does not support yet"
)


class ServerRefused(ToolError):
    """The server answered a request of ours with an MCP error: its code travels along."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class State(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"
    CLOSED = "closed"


def config_key(config: McpConfig) -> str:
    """Identical MCP configurations share one connection (and one child process)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def describe_target(config: McpConfig) -> str:
    """The command line or URL of a server, for operators (URL passwords masked)."""
    if config.command:
        return shlex.join(config.command)
    return mask_credentials(config.url or "")


def describe_error(exc: BaseException) -> str:
    """A one-line, operator-readable description of a (possibly grouped) exception."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {mask_credentials(str(exc.request.url))}"
    if isinstance(exc, httpx2.TransportError):
        return f"{type(exc).__name__}: {exc or 'connection failed'}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_transport_failure(exc: BaseException) -> bool:
    """Does this exception mean the connection itself is gone (not just this call)?"""
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_transport_failure(inner) for inner in exc.exceptions)
    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    return isinstance(
        exc,
        httpx2.TransportError
        | OSError
        | anyio.ClosedResourceError
        | anyio.BrokenResourceError
        | anyio.EndOfStream,
    )


def unsupported_reason(tool: mcp_types.Tool) -> str | None:
    """Why a tool is never offered, or None when it can be called."""
    execution = tool.execution
    if execution is not None and execution.task_support == "required":
        return TASKS_UNSUPPORTED
    return None


def tool_annotations(tool: mcp_types.Tool) -> dict[str, Any] | None:
    """The tool's annotations in MCP's own spelling (``readOnlyHint``, ``destructiveHint``, ...)."""
    if tool.annotations is None:
        return None
    return tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") or None


def _root_uri(root: str) -> str:
    return root if "://" in root else Path(root).resolve().as_uri()


@dataclass(eq=False)
class _Call:
    """A tool call in flight on a connection: what the server's requests during it are answered with."""

    connection: McpConnection
    ctx: ToolContext | None
    sampling_refusal: str

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.ctx is not None:
            self.ctx.progress(progress, total, message)


# The call whose task is running. Over streamable HTTP and in 2026 input-required
# rounds, the SDK runs the server's requests in the calling task's context, so
# this names the call a sampling request belongs to exactly.
_current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("plugway_mcp_call", default=None)


@dataclass
class _Client(Client):
    """The SDK client with a discovery probe of its own length.

    Servers that ignore unknown requests never answer the 2026 ``server/discover``
    probe; after ``probe_timeout_s`` it counts as unanswered and the SDK falls
    back to ``initialize`` (its own probe waits 10 s, a whole connect timeout).
    """

    probe_timeout_s: float = field(default=3.0, kw_only=True)

    async def _build_session(self, exit_stack: AsyncExitStack) -> Any:
        session = await super()._build_session(exit_stack)
        send_discover = session.send_discover
        limit = self.probe_timeout_s

        async def bounded_discover(version: str) -> dict[str, Any]:
            try:
                with anyio.fail_after(limit):
                    result: dict[str, Any] = await send_discover(version)
                    return result
            except TimeoutError:
                raise MCPError(code=REQUEST_TIMEOUT, message=f"no answer to server/discover within {limit:g} s") from None

        session.send_discover = bounded_discover  # type: ignore[method-assign]  # this session only
        return session


class McpConnection:
    """A supervised connection to one MCP server configuration."""

    def __init__(
        self,
        config: McpConfig,
        *,
        label: str,
        log_name: str | None = None,
        list_ttl_s: float = 300.0,
        max_result_chars: int = 20000,
        connect_timeout_s: float = 10.0,
        probe_timeout_s: float = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        offline_grace_s: float = 60.0,
        ping_interval_s: float = 30.0,
        bearer: Callable[[bool], Awaitable[str]] | None = None,
    ) -> None:
        self.config = config
        # The OAuth token source of a server with `auth` (True: refresh it now); see runtime.mcp.oauth.
        self._bearer = bearer
        self.label = label
        self.log_name = log_name or label
        self.organisations: list[str] = []
        self.transport_kind = "stdio" if config.command else "http"
        self.target = describe_target(config)
        self.plugin_ids: list[str] = []
        self.list_ttl_s = list_ttl_s
        self.max_result_chars = max_result_chars
        self.connect_timeout_s = config.connect_timeout_s or connect_timeout_s
        self.probe_timeout_s = min(config.probe_timeout_s or probe_timeout_s, self.connect_timeout_s)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.offline_grace_s = offline_grace_s
        self.ping_interval_s = config.ping_interval_s or ping_interval_s
        self.created_at = time.monotonic()

        self.state = State.CONNECTING
        self._error: str | None = None
        # The reason of the last failure and when (UTC), kept after the server is back, for operators.
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.retry_at: float | None = None  # time.monotonic() of the next attempt, in BACKOFF
        self.ever_connected = False
        self.failed_attempts = 0  # connection attempts that never got to READY
        # The latest attempt to (re)connect failed: the server is down, not merely restarting.
        self.last_attempt_failed = False
        self.restarts = 0  # connections lost after being up
        self.tools: list[mcp_types.Tool] = []
        self.tools_generation = 0  # bumped whenever the tool list (or the resources) change
        self.resources: list[mcp_types.Resource] = []
        self.resource_templates: list[mcp_types.ResourceTemplate] = []
        self.prompts: list[mcp_types.Prompt] = []
        self.server_info: mcp_types.Implementation | None = None
        self.capabilities: mcp_types.ServerCapabilities | None = None
        self.protocol_version: str | None = None
        self._tools_by_name: dict[str, mcp_types.Tool] = {}
        self._listed_at = 0.0
        self._tools_stale = False
        self._roots = [_root_uri(root) for root in config.roots or ()]

        self._client: Client | None = None
        self._process: ChildProcessTransport | None = None
        self._generation = 0  # one per connection attempt
        self._closing = False
        self._closed = asyncio.Event()
        self._wake = asyncio.Event()  # ends a backoff early (the server was just authorized)
        self._broken = asyncio.Event()
        self._changed = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._refresh_requested = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._connected_at: float | None = None
        self._down_since: float | None = None
        self._http_error: str | None = None  # the last HTTP refusal while connecting
        self._session_lost: tuple[int, str] | None = None  # (generation, reason)
        self._calls: set[_Call] = set()
        # Resource URI -> who wants to hear that it changed (see watch_resource).
        self._watched: dict[str, list[Callable[[str], None]]] = {}
        self._watch_changed = asyncio.Event()
        self._watch_version = 0  # bumped whenever the set of watched URIs changes
        self._watch_applied = 0  # the version the server has been told of
        self._watch_applied_event = asyncio.Event()
        # Connections whose server's requests name no call serve one call at a time.
        self._one_at_a_time = asyncio.Lock()
        self._serving: _Call | None = None
        self._task: asyncio.Task[None] | None = None

    # ----- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            # A fresh context: whatever task first needed this server (a tool call, say)
            # must not lend its context variables to the connection's own work.
            self._task = asyncio.create_task(
                self._own(), name=f"mcp-connection:{self.log_name}", context=contextvars.Context()
            )

    @property
    def busy(self) -> bool:
        """Whether a call is in flight on this connection."""
        return bool(self._calls)

    def wake(self) -> None:
        """Try again now instead of at the end of the backoff (what blocked the last attempt was fixed)."""
        self._wake.set()

    async def wait_first_attempt(self) -> None:
        """Returns once the first connection attempt has succeeded or failed."""
        await self._first_attempt_done.wait()

    async def aclose(self) -> None:
        self._closing = True
        self._closed.set()
        self._broken.set()
        if self._scope is not None:
            self._scope.cancel()
        if self._task is not None:
            # Shielded: the process must be reaped even if our caller is cancelled.
            await asyncio.shield(self._task)
        self._set_state(State.CLOSED)

    @property
    def pid(self) -> int | None:
        if self._process is None or self.state is not State.READY:
            return None
        return self._process.pid

    @property
    def error(self) -> str | None:
        """Why the server is not ready now (None while it is)."""
        return self._error

    @error.setter
    def error(self, reason: str | None) -> None:
        self._error = reason
        if reason is not None:
            self.last_error, self.last_error_at = reason, datetime.now(UTC)

    @property
    def starting(self) -> bool:
        return self.state is State.CONNECTING and not self.ever_connected

    def state_name(self) -> str:
        """``starting``, ``ready``, ``reconnecting``, ``backoff`` or ``closed``."""
        if self.state is State.CONNECTING:
            return "reconnecting" if self.ever_connected else "starting"
        return self.state.value

    def health(self) -> dict[str, Any]:
        retry_in = None
        if self.state is State.BACKOFF and self.retry_at is not None:
            retry_in = round(max(0.0, self.retry_at - time.monotonic()), 1)
        return {
            "healthy": self.state is State.READY,
            "state": self.state_name(),
            "transport": self.transport_kind,
            "target": self.target,
            "error": self.error,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "tools": [tool.name for tool in self.offered_tools()],
            "unsupported_tools": [
                {"name": tool.name, "reason": reason}
                for tool in self.tools
                if (reason := unsupported_reason(tool)) is not None
            ],
            "resources": len(self.resources),
            "resource_templates": [template.uri_template for template in self.resource_templates],
            "prompts": [prompt.name for prompt in self.prompts],
            "pid": self.pid,
            "protocol": self.protocol_version if self.state is State.READY else None,
            "retry_in_s": retry_in,
            "restarts": self.restarts,
            "organisations": list(self.organisations),
            "shared": self.config.shared,
        }

    def describe(self) -> dict[str, Any]:
        """Everything an operator may want to know about the server (see ``McpManager.describe``)."""
        server = None
        if self.server_info is not None:
            server = {"name": self.server_info.name, "version": self.server_info.version}
        return {
            **self.health(),
            "server": server,
            "tool_details": [
                {
                    "name": tool.name,
                    "title": tool.title,
                    "description": tool.description or "",
                    "annotations": tool_annotations(tool),
                    "task_support": tool.execution.task_support if tool.execution is not None else None,
                    "offered": unsupported_reason(tool) is None,
                }
                for tool in self.tools
            ],
            "resource_list": [
                {"uri": str(r.uri), "name": r.name, "description": r.description, "mime_type": r.mime_type}
                for r in self.resources
            ],
            "resource_template_list": [
                {"uri_template": t.uri_template, "name": t.name, "description": t.description}
                for t in self.resource_templates
            ],
            "prompt_list": [
                {
                    "name": p.name,
                    "description": p.description,
                    "arguments": [
                        {"name": a.name, "description": a.description, "required": bool(a.required)}
                        for a in p.arguments or ()
                    ],
                }
                for p in self.prompts
            ],
            "roots": list(self._roots),
            "sampling_model": self.config.sampling_model,
        }

    def _set_state(self, state: State) -> None:
        self.state = state
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _connection_lost(self, generation: int, reason: str) -> None:
        """Called from request tasks (and the HTTP layer) that saw the connection die under them."""
        if generation == self._generation and self.state is State.READY:
            self.error = reason
            self._client = None
            self._down_since = time.monotonic()
            # Calls arriving from now on wait for the reconnection instead of
            # reaching for the dead session.
            self._set_state(State.CONNECTING)
            self._broken.set()

    def _session_gone(self, generation: int, reason: str) -> None:
        if generation == self._generation:
            self._session_lost = (generation, reason)
        self._connection_lost(generation, f"the server no longer knows this session ({reason})")

    def _record_http_error(self, status: str | None) -> None:
        if self._connected_at is None:
            self._http_error = status

    async def _own(self) -> None:
        failures = 0
        while not self._closing:
            self._generation += 1
            self._broken.clear()
            self._set_state(State.CONNECTING)
            self._connected_at = None
            self._http_error = None
            failure: str | None = None
            try:
                await self._run_session()
            except Exception as exc:
                if not self._closing:
                    failure = self._failure_reason(exc)
            finally:
                self._client = None
                self._first_attempt_done.set()
            if self._closing:
                break
            connected_at = self._connected_at
            if connected_at is not None:
                self.error = failure or self.error or "connection closed"
                self.restarts += 1
                if self._down_since is None:
                    self._down_since = time.monotonic()
                logger.warning("MCP server %s: connection lost: %s; reconnecting", self.log_name, self.error)
                if time.monotonic() - connected_at >= self.stable_after_s:
                    failures = 0
                failures += 1
                # The first drop after a good run is retried at once: a crashed
                # server should be back for the very next call.
                delay = 0.0 if failures == 1 else self._backoff(failures - 1)
            else:
                self.error = failure or "connection closed"
                logger.warning("MCP server %s: cannot connect: %s", self.log_name, self.error)
                failures += 1
                # Before the state changes: calls waiting on this attempt learn it failed.
                self.failed_attempts += 1
                self.last_attempt_failed = True
                delay = self._backoff(failures)
            if delay > 0:
                self.retry_at = time.monotonic() + delay
                self._set_state(State.BACKOFF)
                self._wake.clear()
                with anyio.move_on_after(delay):
                    async with anyio.create_task_group() as waits:

                        async def until(event: asyncio.Event) -> None:
                            await event.wait()
                            waits.cancel_scope.cancel()

                        waits.start_soon(until, self._closed)
                        waits.start_soon(until, self._wake)
                self.retry_at = None
        self._set_state(State.CLOSED)

    def _failure_reason(self, exc: Exception) -> str:
        reason = describe_error(exc)
        process = self._process
        if process is not None and process.returncode is not None and not isinstance(exc, TimeoutError):
            # "Connection closed" says less than the exit code and last stderr line.
            reason = process.exit_reason()
        elif self.state is not State.READY and self.error and self._connected_at is not None:
            # The session was ended on purpose (process exit, forgotten session): that says why.
            reason = self.error
        if self._connected_at is None and self._http_error and self._http_error not in reason:
            reason = f"{self._http_error} ({reason})"
        return reason

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, failures - 1))

    async def _run_session(self) -> None:
        """Connect, list tools, publish the session, and hold it until it breaks or closes.

        Everything here runs in the owner task, so the SDK's task groups are
        entered and exited by the same task, in order.
        """
        deadline = anyio.current_time() + self.connect_timeout_s
        connected = False
        with anyio.CancelScope(deadline=deadline) as scope:
            self._scope = scope
            if self._closing:
                scope.cancel()
            async with AsyncExitStack() as stack:
                transport = await self._open_transport(stack)
                client = _Client(
                    transport,
                    cache=None,  # lists are cached here, with our own TTL and refresh rules
                    message_handler=self._on_message,  # type: ignore[arg-type]  # the SDK protocol names its parameter differently
                    client_info=_CLIENT_INFO,
                    sampling_callback=self._on_sampling,
                    # Advertises elicitation (form and URL): a call made through /mcp by a
                    # client that can ask a person forwards it; every other call declines.
                    elicitation_callback=self._on_elicitation,
                    list_roots_callback=self._on_list_roots if self._roots else None,
                    probe_timeout_s=self.probe_timeout_s,
                )
                await stack.enter_async_context(client)
                # The handshake succeeded: refusals before it (the probe's) explain nothing later.
                self._http_error = None
                tools = await self._list_all(client)
                self.capabilities = client.server_capabilities
                with anyio.move_on_after(max(0.5, self.connect_timeout_s / 2)):
                    await self._list_extras(client)
                scope.deadline = math.inf
                connected = True
                self._client = client
                self._set_tools(tools)
                self.error = None
                self.last_attempt_failed = False
                self.ever_connected = True
                self._connected_at = time.monotonic()
                self._down_since = None
                self._session_lost = None
                self.protocol_version = client.protocol_version
                self.server_info = client.server_info
                self._set_state(State.READY)
                self._first_attempt_done.set()
                logger.info(
                    "MCP server %s connected (%s, protocol %s, %d tools)",
                    self.log_name,
                    self.transport_kind,
                    client.protocol_version,
                    len(tools),
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._refresh_on_request)
                    tg.start_soon(self._keep_resource_subscriptions, client)
                    if self.transport_kind == "http":
                        tg.start_soon(self._keep_pinging, client, self._generation)
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS and self._announces_changes():
                        tg.start_soon(self._listen_for_changes, client)
                    await self._broken.wait()
                    tg.cancel_scope.cancel()
                self._client = None
        self._scope = None
        if scope.cancelled_caught and not connected and not self._closing:
            raise TimeoutError(f"no answer within {self.connect_timeout_s:g} s")

    async def _open_transport(self, stack: AsyncExitStack) -> AbstractAsyncContextManager[Any]:
        generation = self._generation
        if self.config.command:

            def on_exit(reason: str) -> None:
                self._connection_lost(generation, reason)
                if self.state is not State.READY and generation == self._generation:
                    self.error = reason

            self._process = ChildProcessTransport(
                self.config.command,
                env=self.config.env,
                cwd=self.config.cwd,
                label=self.log_name,
                on_exit=on_exit,
            )
            return self._process.open()
        assert self.config.url is not None
        auth = None
        if self._bearer is not None:
            await self._bearer(False)  # no token, no attempt: the reason says who must authorize
            auth = BearerAuth(self._bearer)
        watch = HttpWatch(
            session_gone=lambda reason: self._session_gone(generation, reason),
            unreachable=lambda reason: self._connection_lost(generation, f"server unreachable ({reason})"),
            http_error=self._record_http_error,
            forgotten=lambda: self._session_lost is not None and self._session_lost[0] == generation,
        )
        http_client = watched_http_client(
            headers=self.config.headers, connect_timeout_s=self.connect_timeout_s, watch=watch, auth=auth
        )
        http_client.event_hooks["request"].append(traceparent_header)  # the caller's trace, for the server
        await stack.enter_async_context(http_client)
        return streamable_http_client(self.config.url, http_client=http_client)

    # ----- tool lists, resources, prompts ----------------------------------------

    async def _list_all(self, client: Client) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        seen_cursors: set[str] = set()
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            # A server repeating a cursor would otherwise loop forever.
            if cursor is None or cursor in seen_cursors:
                break
            seen_cursors.add(cursor)
        return tools

    async def _list_extras(self, client: Client) -> None:
        """Resources, resource templates and prompts; a server failing to list them keeps its tools."""
        capabilities = client.server_capabilities
        resources: list[mcp_types.Resource] = []
        templates: list[mcp_types.ResourceTemplate] = []
        prompts: list[mcp_types.Prompt] = []
        try:
            if capabilities.resources is not None:
                cursor: str | None = None
                for _ in range(_MAX_LIST_PAGES):
                    page = await client.list_resources(cursor=cursor)
                    resources.extend(page.resources)
                    if page.next_cursor is None or page.next_cursor == cursor:
                        break
                    cursor = page.next_cursor
                templates = list((await client.list_resource_templates()).resource_templates)
            if capabilities.prompts is not None:
                prompts = list((await client.list_prompts()).prompts)
        except Exception as exc:
            logger.info("MCP server %s: cannot list its resources or prompts: %s", self.log_name, describe_error(exc))
        changed = (resources, templates) != (self.resources, self.resource_templates)
        self.resources, self.resource_templates, self.prompts = resources, templates, prompts
        if changed:
            self.tools_generation += 1

    def _set_tools(self, tools: list[mcp_types.Tool]) -> None:
        if [t.model_dump() for t in tools] != [t.model_dump() for t in self.tools]:
            self.tools_generation += 1
        self.tools = tools
        self._tools_by_name = {tool.name: tool for tool in tools}
        self._listed_at = time.monotonic()
        self._tools_stale = False

    def offered_tools(self) -> list[mcp_types.Tool]:
        """The cached tools that can be called (never those needing MCP tasks)."""
        return [tool for tool in self.tools if unsupported_reason(tool) is None]

    @property
    def offers_resources(self) -> bool:
        """Does the server have resources (listed ones or templates)? A capability alone is not enough."""
        has_resources = self.capabilities is not None and self.capabilities.resources is not None
        return has_resources and bool(self.resources or self.resource_templates)

    def tools_fresh(self) -> bool:
        return not self._tools_stale and time.monotonic() - self._listed_at < self.list_ttl_s

    async def refresh_tools(self, *, force: bool = False) -> None:
        """Fetch the tool list again (all pages). Raises ToolError if the server is unreachable."""
        async with self._refresh_lock:
            if not force and self.tools_fresh():
                return
            client, generation = self._client, self._generation
            if client is None or self.state is not State.READY:
                raise ToolError(self.unavailable_message())
            try:
                with anyio.fail_after(self.connect_timeout_s):
                    tools = await self._list_all(client)
                    await self._list_extras(client)
            except Exception as exc:
                reason = describe_error(exc)
                if _is_transport_failure(exc) or isinstance(exc, TimeoutError):
                    self._connection_lost(generation, reason)
                raise ToolError(
                    f"MCP server for plugin '{self.label}' failed to list its tools: {reason}"
                ) from None
            self._set_tools(tools)

    def _on_message(self, message: Any) -> Awaitable[None]:
        return self._handle_message(message)

    async def _handle_message(self, message: Any) -> None:
        # Legacy (pre-2026) servers announce list changes with a notification.
        # This runs inside the SDK's receive loop, which must not wait on a
        # request of its own: the refresh happens in the owner's task group.
        notification = getattr(message, "root", message)
        if isinstance(notification, mcp_types.ResourceUpdatedNotification):
            # A 2026 server's updates come on the listen stream, which hands them over itself.
            if self.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                self._resource_updated(str(notification.params.uri))
        elif isinstance(
            notification,
            mcp_types.ToolListChangedNotification
            | mcp_types.ResourceListChangedNotification
            | mcp_types.PromptListChangedNotification,
        ):
            self._tools_stale = True
            self._refresh_requested.set()
        elif isinstance(message, Exception):
            logger.debug(
                "MCP server %s: transport reported %s", self.log_name, describe_error(message)
            )
        await anyio.lowlevel.checkpoint()

    def _announces_changes(self) -> bool:
        caps = self.capabilities
        if caps is None:
            return False
        return any(
            group is not None and bool(group.list_changed)
            for group in (caps.tools, caps.resources, caps.prompts)
        )

    async def _listen_for_changes(self, client: Client) -> None:
        # 2026-07-28 servers announce changes on a subscriptions/listen stream; a
        # stream that ends is opened again (the TTL still catches changes meanwhile).
        caps = client.server_capabilities
        pause = 1.0
        while True:
            try:
                async with client.listen(
                    tools_list_changed=bool(caps.tools and caps.tools.list_changed),
                    resources_list_changed=bool(caps.resources and caps.resources.list_changed),
                    prompts_list_changed=bool(caps.prompts and caps.prompts.list_changed),
                ) as subscription:
                    honored = subscription.honored
                    if not (honored.tools_list_changed or honored.resources_list_changed or honored.prompts_list_changed):
                        return
                    pause = 1.0
                    async for _event in subscription:
                        self._tools_stale = True
                        self._refresh_requested.set()
            except Exception as exc:
                logger.debug("MCP server %s: change subscription ended: %s", self.log_name, describe_error(exc))
            await anyio.sleep(pause)
            pause = min(pause * 2, 60.0)

    async def _keep_pinging(self, client: Client, generation: int) -> None:
        # A stateless (2026) server keeps no stream open to us, so nothing else
        # notices that it died until a call fails on it: health, /readyz and the
        # tools offered would go on saying it is up. An older server's session
        # stream notices, but not a server that hangs: it is pinged as well.
        while True:
            await anyio.sleep(self.ping_interval_s)
            try:
                with anyio.fail_after(self.connect_timeout_s):
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        await client.list_tools()  # the 2026 protocol has no ping
                    else:
                        await client.send_ping()
            except TimeoutError:
                self._connection_lost(generation, f"no answer to a ping within {self.connect_timeout_s:g} s")
                return
            except Exception as exc:
                if _is_transport_failure(exc) or not isinstance(exc, MCPError):
                    self._connection_lost(generation, f"ping failed: {describe_error(exc)}")
                    return
                # An MCP error is an answer: the server is there.

    async def _refresh_on_request(self) -> None:
        while True:
            await self._refresh_requested.wait()
            self._refresh_requested.clear()
            try:
                await self.refresh_tools(force=True)
            except ToolError as exc:
                logger.info("%s", exc)

    # ----- resource subscriptions ------------------------------------------------

    async def watch_resource(self, uri: str, listener: Callable[[str], None], *, wait_s: float | None = None) -> Callable[[], None]:
        """Have ``listener(uri)`` called whenever the server says the resource changed.

        The server is told (a ``subscriptions/listen`` stream naming every watched URI for
        2026 servers, ``resources/subscribe`` for older ones, again after each reconnection);
        this waits (at most ``wait_s``) until it has been, so that no change after the call
        returns is missed. Returns the function that stops the watch.
        """
        listeners = self._watched.setdefault(uri, [])
        listeners.append(listener)
        if len(listeners) == 1:
            self._watch_version += 1
            self._watch_changed.set()
        version = self._watch_version

        def unwatch() -> None:
            current = self._watched.get(uri)
            if current is None or listener not in current:
                return
            current.remove(listener)
            if not current:
                del self._watched[uri]
                self._watch_version += 1
                self._watch_changed.set()

        if self.state is State.READY:
            with anyio.move_on_after(self.connect_timeout_s if wait_s is None else wait_s):
                while self._watch_applied < version:
                    await self._watch_applied_event.wait()
        return unwatch

    def _resource_updated(self, uri: str) -> None:
        for listener in list(self._watched.get(uri, ())):
            try:
                listener(uri)
            except Exception:
                logger.exception("MCP server %s: a resource-update listener failed", self.log_name)

    def _applied(self, version: int) -> None:
        self._watch_applied = max(self._watch_applied, version)
        event, self._watch_applied_event = self._watch_applied_event, asyncio.Event()
        event.set()

    async def _keep_resource_subscriptions(self, client: Client) -> None:
        """Keep the server told which resources are watched, for as long as this session lasts."""
        modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
        subscribed: set[str] = set()
        while True:
            self._watch_changed.clear()
            version, wanted = self._watch_version, sorted(self._watched)
            if modern and wanted:
                try:
                    async with client.listen(resource_subscriptions=wanted) as subscription, anyio.create_task_group() as tg:
                        self._applied(version)

                        async def pump(sub: Any = subscription, group: Any = tg) -> None:
                            async for event in sub:
                                if isinstance(event, ResourceUpdated):
                                    self._resource_updated(event.uri)
                            group.cancel_scope.cancel()  # the stream ended: open it again

                        tg.start_soon(pump)
                        await self._watch_changed.wait()
                        tg.cancel_scope.cancel()
                    continue
                except Exception as exc:
                    logger.info("MCP server %s: cannot subscribe to resources: %s", self.log_name, describe_error(exc))
                    self._applied(version)  # nothing to wait for
                    await anyio.sleep(1.0)
                    continue
            if not modern:
                for uri in sorted(set(wanted) - subscribed):
                    try:
                        await client.subscribe_resource(uri)
                        subscribed.add(uri)
                    except Exception as exc:
                        logger.info("MCP server %s: cannot subscribe to %s: %s", self.log_name, uri, describe_error(exc))
                for uri in sorted(subscribed - set(wanted)):
                    subscribed.discard(uri)
                    try:
                        await client.unsubscribe_resource(uri)
                    except Exception as exc:
                        logger.debug("MCP server %s: unsubscribing from %s: %s", self.log_name, uri, describe_error(exc))
            self._applied(version)
            await self._watch_changed.wait()

    # ----- server requests: sampling, roots, elicitation ---------------------------

    def serves_one_call_at_a_time(self) -> bool:
        """Does this connection run its calls one after the other?

        Over streamable HTTP the SDK runs a server's request in the context of the
        call whose response stream carried it, and a 2026 server asks inside its
        call's own result (input-required rounds): either way the request names its
        call. A pre-2026 server over stdio sends its requests on the shared pipe with
        nothing saying which call they belong to; serving one call at a time makes
        the answer certain.
        """
        return self.transport_kind == "stdio" and self.protocol_version not in MODERN_PROTOCOL_VERSIONS

    def _call_for_server_request(self) -> _Call | None:
        call = _current_call.get()
        if call is not None and call.connection is self and call in self._calls:
            return call
        # Never "the only call running": a request sent late, or outside its call's
        # stream, would be answered with another call's model, key and budget.
        return self._serving

    async def _on_sampling(
        self, context: ClientRequestContext, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        call = self._call_for_server_request()
        if call is None:
            why = (
                "plugway cannot tell which of this server's tool calls asked (the request did not come with its call)"
                if self._calls
                else "plugway answers sampling requests only during a call of one of this server's tools"
            )
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=f"Sampling declined: {why}.")
        if call.ctx is None or call.ctx.sample is None:
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=call.sampling_refusal)
        try:
            request = sampling_request(params)
        except SamplingRefused as exc:
            return mcp_types.ErrorData(code=INVALID_PARAMS, message=f"Sampling declined: {exc}.")
        try:
            result = await call.ctx.sample(request)
        except ToolError as exc:
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=f"Sampling declined: {exc}")
        except Exception:
            logger.exception("MCP server %s: answering a sampling request failed", self.log_name)
            return mcp_types.ErrorData(code=INTERNAL_ERROR, message="The gateway failed to answer the sampling request.")
        return sampling_result(result)

    async def _on_elicitation(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        call = self._call_for_server_request()
        if call is None or call.ctx is None or call.ctx.elicit is None:
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=_ELICITATION_REFUSAL)
        try:
            answer = await call.ctx.elicit(params.model_dump(by_alias=True, exclude_none=True, mode="json"))
            return mcp_types.ElicitResult.model_validate(answer)
        except ToolError as exc:
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=f"Elicitation declined: {exc}")
        except Exception:
            logger.exception("MCP server %s: forwarding an elicitation request failed", self.log_name)
            return mcp_types.ErrorData(code=INTERNAL_ERROR, message="The gateway failed to forward the elicitation request.")

    async def _on_list_roots(self, context: ClientRequestContext) -> mcp_types.ListRootsResult:
        roots = [mcp_types.Root(uri=uri, name=Path(uri.removeprefix("file://")).name or None) for uri in self._roots]  # type: ignore[arg-type]  # pydantic validates the file:// URI
        return mcp_types.ListRootsResult(roots=roots)

    # ----- calls -----------------------------------------------------------------

    def unavailable_message(self) -> str:
        base = f"The MCP server for plugin '{self.label}' is unavailable"
        if self.error:
            base += f" ({self.error})"
        if self.state is State.BACKOFF and self.retry_at is not None:
            return f"{base}; retrying in {max(0.0, self.retry_at - time.monotonic()):.0f} s."
        if self.state is State.CLOSED:
            return f"{base}; the gateway is shutting down."
        return f"{base}."

    def offering_cached(self) -> bool:
        """Is the cached tool list still offered (up, or coming back within the grace period)?"""
        if not self.ever_connected or self.state is State.CLOSED:
            return False
        if self.state is State.READY:
            return True
        if self.last_attempt_failed:
            # Down, and it could not be brought back: nothing is offered until it is.
            return False
        return self._down_since is not None and time.monotonic() - self._down_since < self.offline_grace_s

    async def _acquire(self) -> tuple[Client, int]:
        """The live session: waits for a connection attempt under way or due, fails if it fails."""
        failed_before = self.failed_attempts
        while True:
            if self.state is State.READY and self._client is not None:
                return self._client, self._generation
            if self.state is State.CLOSED or self.failed_attempts > failed_before or self.last_attempt_failed:
                # A server whose last attempt failed is down: say why now rather than
                # have the call wait out its timeout for an attempt due who knows when.
                raise ToolError(self.unavailable_message())
            if self.ever_connected:
                if not self.offering_cached():
                    raise ToolError(self.unavailable_message())
            elif self.state is not State.CONNECTING:
                # Never up and backing off: no reason to believe the next attempt does better.
                raise ToolError(self.unavailable_message())
            changed = self._changed
            await changed.wait()

    async def tools_for_offer(self) -> list[mcp_types.Tool]:
        """The tools to offer the model now: the cached list while the server is (or is coming back) up."""
        if self.state is State.READY and not self.tools_fresh():
            try:
                await self.refresh_tools()
            except ToolError:
                pass
        return self.offered_tools() if self.offering_cached() else []

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        ctx: ToolContext | None = None,
        *,
        sampling_refusal: str = NO_MODEL_FOR_SAMPLING,
    ) -> str | ToolResult:
        """Call a tool; the result as the model reads it. Raises ToolError for every failure."""
        call = _Call(self, ctx, sampling_refusal)
        token = _current_call.set(call)
        self._calls.add(call)
        try:
            result = await self._call(name, arguments, call)
        finally:
            self._calls.discard(call)
            _current_call.reset(token)
        rendered = render_result(result, self.max_result_chars)
        if result.is_error:
            raise ToolError(result_text(rendered))
        return rendered

    async def _call(self, name: str, arguments: dict[str, Any], call: _Call) -> mcp_types.CallToolResult:
        await self._acquire()
        if not self.serves_one_call_at_a_time():
            return await self._call_now(name, arguments, call)
        async with self._one_at_a_time:
            self._serving = call
            try:
                return await self._call_now(name, arguments, call)
            finally:
                self._serving = None

    async def _call_now(self, name: str, arguments: dict[str, Any], call: _Call) -> mcp_types.CallToolResult:
        client, generation = await self._acquire()
        tool = self._tools_by_name.get(name)
        if tool is None:
            await self.refresh_tools(force=True)
            tool = self._tools_by_name.get(name)
            if tool is None:
                raise ToolError(f"The MCP server for plugin '{self.label}' has no tool named '{name}'.")
            client, generation = await self._acquire()
        reason = unsupported_reason(tool)
        if reason is not None:
            raise ToolError(f"The tool '{name}' cannot be called: {reason}.")
        for attempt in (1, 2):
            try:
                return await client.call_tool(name, arguments, progress_callback=call.progress)
            except Exception as exc:
                if attempt == 1 and self._session_lost is not None and self._session_lost[0] == generation:
                    # The server never saw this call: it refused the session, so send it again on a new one.
                    logger.warning(
                        "MCP server %s forgot its session (%s); calling %s again on a new session",
                        self.log_name,
                        self._session_lost[1],
                        name,
                    )
                    client, generation = await self._acquire()
                    continue
                raise await self._call_failure(name, exc, generation) from None
        raise AssertionError("unreachable")

    async def _call_failure(self, name: str, exc: Exception, generation: int) -> ToolError:
        if isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT:
            return ToolError(f"The tool '{name}' timed out.")
        if _is_transport_failure(exc):
            if not isinstance(exc, MCPError):
                self._connection_lost(generation, describe_error(exc))
            reason = await self._lost_reason(generation)
            return ToolError(f"The MCP server for plugin '{self.label}' failed during the call ({reason}).")
        if isinstance(exc, MCPError):
            return ToolError(f"The tool '{name}' failed: {exc.message}")
        return ToolError(f"The tool '{name}' failed: {describe_error(exc)}")

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        """Read one resource (raises ToolError)."""
        await self._acquire()
        if not self.serves_one_call_at_a_time():
            return await self._read_resource_now(uri)
        # Its turn like a call's, so that a server's request meanwhile is never taken for a call's.
        async with self._one_at_a_time:
            self._serving = _Call(self, None, "Sampling declined: plugway does not answer sampling requests while reading a resource.")
            try:
                return await self._read_resource_now(uri)
            finally:
                self._serving = None

    async def _read_resource_now(self, uri: str) -> mcp_types.ReadResourceResult:
        client, generation = await self._acquire()
        try:
            return await client.read_resource(uri)
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise ServerRefused(f"Cannot read '{uri}': {exc.message}", exc.code) from None
            raise await self._call_failure("read_resource", exc, generation) from None
        except Exception as exc:
            raise await self._call_failure("read_resource", exc, generation) from None

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> mcp_types.GetPromptResult:
        """One prompt, filled in (raises ToolError)."""
        result: mcp_types.GetPromptResult = await self._request(
            f"prompt '{name}'", lambda client: client.get_prompt(name, arguments)
        )
        return result

    async def complete(
        self,
        ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None,
    ) -> mcp_types.CompleteResult:
        """Completions for a prompt's or a resource template's argument (raises ToolError)."""
        result: mcp_types.CompleteResult = await self._request(
            "completion", lambda client: client.complete(ref, argument, context_arguments)
        )
        return result

    async def _request(self, what: str, send: Any) -> Any:
        """A request of the client's own (not a tool call): nothing of a call's runs meanwhile."""
        await self._acquire()
        if not self.serves_one_call_at_a_time():
            return await self._request_now(what, send)
        async with self._one_at_a_time:
            self._serving = _Call(self, None, f"Sampling declined: plugway does not answer sampling requests for a {what}.")
            try:
                return await self._request_now(what, send)
            finally:
                self._serving = None

    async def _request_now(self, what: str, send: Any) -> Any:
        client, generation = await self._acquire()
        try:
            return await send(client)
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise ServerRefused(f"The MCP server for plugin '{self.label}' refused the {what}: {exc.message}", exc.code) from None
            raise await self._call_failure(what, exc, generation) from None
        except Exception as exc:
            raise await self._call_failure(what, exc, generation) from None

    async def _lost_reason(self, generation: int) -> str:
        # A dead child tells us why (exit code, last stderr line) a moment after
        # the SDK reports its generic "Connection closed": wait for that.
        process = self._process
        if process is not None and generation == self._generation:
            with anyio.move_on_after(1.0):
                await process.exited.wait()
            if process.returncode is not None:
                reason = process.exit_reason()
                if generation == self._generation:
                    self.error = reason
                return reason
        self._connection_lost(generation, "connection closed")
        return self.error or "connection closed"
