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
off from ``backoff_initial_s`` doubling to ``backoff_max_s``, and a call that
arrives during a backoff fails at once instead of hanging. A connection that
stayed up ``stable_after_s`` forgets its earlier failures.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import time
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from runtime.config import McpConfig
from runtime.mcp.process import ChildProcessTransport
from runtime.mcp.results import render_result
from runtime.plugin_host.tool import ToolError

logger = logging.getLogger("plugway.mcp")

_MAX_LIST_PAGES = 100
_CLIENT_INFO = mcp_types.Implementation(name="plugway", version="0.1.0")


class State(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"
    CLOSED = "closed"


def config_key(config: McpConfig) -> str:
    """Identical MCP configurations share one connection (and one child process)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def describe_error(exc: BaseException) -> str:
    """A one-line, operator-readable description of a (possibly grouped) exception."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
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


class McpConnection:
    """A supervised connection to one MCP server configuration."""

    def __init__(
        self,
        config: McpConfig,
        *,
        label: str,
        list_ttl_s: float = 300.0,
        max_result_chars: int = 20000,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
    ) -> None:
        self.config = config
        self.label = label
        self.transport_kind = "stdio" if config.command else "http"
        self.plugin_ids: list[str] = []
        self.list_ttl_s = list_ttl_s
        self.max_result_chars = max_result_chars
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s

        self.state = State.CONNECTING
        self.error: str | None = None
        self.retry_at: float | None = None  # time.monotonic() of the next attempt, in BACKOFF
        self.ever_connected = False
        self.tools: list[mcp_types.Tool] = []
        self.tools_generation = 0  # bumped whenever the tool list changes
        self._tools_by_name: dict[str, mcp_types.Tool] = {}
        self._listed_at = 0.0
        self._tools_stale = False

        self._client: Client | None = None
        self._process: ChildProcessTransport | None = None
        self._generation = 0  # one per connection attempt
        self._closing = False
        self._closed = asyncio.Event()
        self._broken = asyncio.Event()
        self._changed = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._refresh_requested = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._connected_at: float | None = None
        self._quick_reconnect = False
        self._last_http_error: str | None = None
        self.protocol_version: str | None = None
        self._task: asyncio.Task[None] | None = None

    # ----- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._own(), name=f"mcp-connection:{self.label}")

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

    def health(self) -> dict[str, Any]:
        retry_in = None
        if self.state is State.BACKOFF and self.retry_at is not None:
            retry_in = round(max(0.0, self.retry_at - time.monotonic()), 1)
        return {
            "healthy": self.state is State.READY,
            "transport": self.transport_kind,
            "state": self.state.value,
            "error": self.error,
            "tools": [tool.name for tool in self.tools] if self.state is State.READY else [],
            "pid": self.pid,
            "protocol": self.protocol_version if self.state is State.READY else None,
            "retry_in_s": retry_in,
        }

    def _set_state(self, state: State) -> None:
        self.state = state
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _connection_lost(self, generation: int, reason: str) -> None:
        """Called from request tasks that saw the connection die under them."""
        if generation == self._generation and self.state is State.READY:
            self.error = reason
            self._client = None
            # Calls arriving from now on wait for the reconnection instead of
            # reaching for the dead session.
            self._set_state(State.CONNECTING)
            self._broken.set()

    async def _own(self) -> None:
        failures = 0
        while not self._closing:
            self._generation += 1
            self._broken.clear()
            self._set_state(State.CONNECTING)
            self._connected_at = None
            try:
                await self._run_session()
            except Exception as exc:
                if not self._closing:
                    self.error = describe_error(exc)
                    process = self._process
                    if (
                        process is not None
                        and process.returncode is not None
                        and not isinstance(exc, TimeoutError)
                    ):
                        # "Connection closed" says less than the exit code and last stderr line.
                        self.error = process.exit_reason()
                    if self._last_http_error and self._last_http_error not in self.error:
                        self.error = f"{self._last_http_error} ({self.error})"
                    if self._connected_at is None:
                        logger.warning("MCP server %s: cannot connect: %s", self.label, self.error)
                    else:
                        logger.warning("MCP server %s: connection lost: %s", self.label, self.error)
            finally:
                self._client = None
                self._first_attempt_done.set()
            connected_at = self._connected_at
            if self._closing:
                break
            if connected_at is not None:
                if self.error is None:
                    self.error = "connection closed"
                if time.monotonic() - connected_at >= self.stable_after_s:
                    failures = 0
                failures += 1
                # The first drop after a good run is retried at once: a crashed
                # server should be back for the very next call.
                delay = 0.0 if failures == 1 else self._backoff(failures - 1)
            else:
                failures += 1
                delay = self._backoff(failures)
            self._quick_reconnect = delay == 0
            if delay > 0:
                self.retry_at = time.monotonic() + delay
                self._set_state(State.BACKOFF)
                try:
                    await asyncio.wait_for(self._closed.wait(), timeout=delay)
                except TimeoutError:
                    pass
                self.retry_at = None
        self._set_state(State.CLOSED)

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
                client = Client(
                    transport,
                    cache=None,  # tool lists are cached here, with our own TTL and refresh rules
                    message_handler=self._on_message,  # type: ignore[arg-type]  # the SDK protocol names its parameter differently
                    client_info=_CLIENT_INFO,
                )
                await stack.enter_async_context(client)
                tools = await self._list_all(client)
                scope.deadline = math.inf
                connected = True
                self._client = client
                self._set_tools(tools)
                self.error = None
                self.ever_connected = True
                self._connected_at = time.monotonic()
                self.protocol_version = client.protocol_version
                self._set_state(State.READY)
                self._first_attempt_done.set()
                logger.info(
                    "MCP server %s connected (%s, protocol %s, %d tools)",
                    self.label,
                    self.transport_kind,
                    client.protocol_version,
                    len(tools),
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._refresh_on_request)
                    tools_caps = client.server_capabilities.tools
                    if (
                        client.protocol_version in MODERN_PROTOCOL_VERSIONS
                        and tools_caps is not None
                        and tools_caps.list_changed
                    ):
                        tg.start_soon(self._listen_for_changes, client)
                    await self._broken.wait()
                    tg.cancel_scope.cancel()
                self._client = None
        self._scope = None
        if scope.cancelled_caught and not connected and not self._closing:
            raise TimeoutError(f"no answer within {self.connect_timeout_s:g} s")

    async def _open_transport(self, stack: AsyncExitStack) -> AbstractAsyncContextManager[Any]:
        if self.config.command:
            generation = self._generation

            def on_exit(reason: str) -> None:
                self._connection_lost(generation, reason)
                if self.state is not State.READY and generation == self._generation:
                    self.error = reason

            self._process = ChildProcessTransport(
                self.config.command,
                env=self.config.env,
                cwd=self.config.cwd,
                label=self.label,
                on_exit=on_exit,
            )
            return self._process.open()
        assert self.config.url is not None
        self._last_http_error = None

        async def remember_http_error(response: httpx2.Response) -> None:
            # The SDK turns an HTTP 401/403/404 into a generic MCP error; keep
            # the status so the operator sees "HTTP 401" rather than a riddle.
            if response.status_code >= 400:
                self._last_http_error = (
                    f"HTTP {response.status_code} {response.reason_phrase}".strip()
                )

        http_client = httpx2.AsyncClient(
            headers=self.config.headers,
            event_hooks={"response": [remember_http_error]},
            # Reads stay long: a tool may legitimately stream for minutes; the
            # per-call timeout is the orchestration's, enforced by cancellation.
            timeout=httpx2.Timeout(30.0, connect=self.connect_timeout_s, read=300.0),
        )
        await stack.enter_async_context(http_client)
        return streamable_http_client(self.config.url, http_client=http_client)

    # ----- tool lists ------------------------------------------------------------

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

    def _set_tools(self, tools: list[mcp_types.Tool]) -> None:
        if [t.model_dump() for t in tools] != [t.model_dump() for t in self.tools]:
            self.tools_generation += 1
        self.tools = tools
        self._tools_by_name = {tool.name: tool for tool in tools}
        self._listed_at = time.monotonic()
        self._tools_stale = False

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
        # Legacy (pre-2026) servers announce tool changes with a notification.
        # This runs inside the SDK's receive loop, which must not wait on a
        # request of its own: the refresh happens in the owner's task group.
        notification = getattr(message, "root", message)
        if isinstance(notification, mcp_types.ToolListChangedNotification):
            self._tools_stale = True
            self._refresh_requested.set()
        elif isinstance(message, Exception):
            logger.debug(
                "MCP server %s: transport reported %s", self.label, describe_error(message)
            )
        await anyio.lowlevel.checkpoint()

    async def _listen_for_changes(self, client: Client) -> None:
        # 2026-07-28 servers announce changes on a subscriptions/listen stream.
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                if not subscription.honored.tools_list_changed:
                    return
                async for _event in subscription:
                    self._tools_stale = True
                    self._refresh_requested.set()
        except Exception as exc:
            # The TTL still catches changes; no reason to drop the connection.
            logger.info(
                "MCP server %s: change subscription ended: %s", self.label, describe_error(exc)
            )

    async def _refresh_on_request(self) -> None:
        while True:
            await self._refresh_requested.wait()
            self._refresh_requested.clear()
            try:
                await self.refresh_tools(force=True)
            except ToolError as exc:
                logger.info("%s", exc)

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

    async def _acquire(self) -> tuple[Client, int]:
        """The live session, waiting out a connection attempt in progress."""
        while True:
            if self.state is State.READY and self._client is not None:
                return self._client, self._generation
            if self.state is not State.CONNECTING:
                raise ToolError(self.unavailable_message())
            changed = self._changed
            await changed.wait()

    async def tools_for_offer(self) -> list[mcp_types.Tool]:
        """The tools to offer the model now: [] unless the server is (or is coming back) up."""
        if self.state is State.READY:
            if not self.tools_fresh():
                try:
                    await self.refresh_tools()
                except ToolError:
                    return self.tools if self.state is State.READY else []
            return self.tools
        if self.state is State.CONNECTING and self._quick_reconnect:
            # The immediate reconnect after a drop: calls wait for it, so keep
            # offering. Later attempts (after backoff) offer nothing.
            return self.tools
        return []

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        client, generation = await self._acquire()
        if name not in self._tools_by_name:
            await self.refresh_tools(force=True)
            if name not in self._tools_by_name:
                raise ToolError(
                    f"The MCP server for plugin '{self.label}' has no tool named '{name}'."
                )
            client, generation = await self._acquire()
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                reason = await self._lost_reason(generation)
                raise ToolError(
                    f"The MCP server for plugin '{self.label}' failed during the call ({reason})."
                ) from None
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(f"The tool '{name}' timed out.") from None
            raise ToolError(f"The tool '{name}' failed: {exc.message}") from None
        except Exception as exc:
            reason = describe_error(exc)
            if _is_transport_failure(exc):
                self._connection_lost(generation, reason)
                reason = await self._lost_reason(generation)
                raise ToolError(
                    f"The MCP server for plugin '{self.label}' failed during the call ({reason})."
                ) from None
            raise ToolError(f"The tool '{name}' failed: {reason}") from None
        text = render_result(result, self.max_result_chars)
        if result.is_error:
            raise ToolError(text)
        return text

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
