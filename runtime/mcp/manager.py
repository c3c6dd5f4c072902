"""The runtime's MCP connection manager: MCP servers as plugin tool sources.

One :class:`McpConnection` per organisation and distinct MCP configuration: an
organisation's calls never reach a process or an HTTP session that another
organisation's calls reach, so a server's state (a memory, a counter, a browser
session) stays the organisation's. Several plugin ids of one organisation naming
the same configuration share its connection. A configuration marked
``shared: true`` gets one connection for every organisation that configures it:
the operator vouches that the server keeps no state between calls.

Start-up connects to every server concurrently and waits for
them at most ``startup_wait_s``: a slow server is reported ``starting`` and
joins when it is up, a server that is down is reported unhealthy, its tools are
not offered, and it is retried in the background. Neither stops the gateway.

Besides the server's own tools, a server that offers resources gets a
``read_resource`` tool (see :mod:`runtime.mcp.resources`).

A server with ``auth`` (OAuth or client credentials, :mod:`runtime.mcp.oauth`) gets
its bearer token from :class:`~runtime.mcp.oauth.UpstreamAuth` on every request.
One authorized per end user (``auth.per_user``) gets a connection per end user of
the organisation (the call's ``ctx.end_user``), each carrying that user's token:
its tools are listed from any of them (one of a user who authorized earlier is
opened for that), and a call of a user who has not authorized answers the link to
do so. Until anyone has, the server offers one ``authorize`` tool that does that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from runtime.config import McpConfig, PluginRef
from runtime.mcp.connection import (
    NO_MODEL_FOR_SAMPLING,
    McpConnection,
    config_key,
    describe_target,
    tool_annotations,
)
from runtime.mcp.oauth import NotAuthorized, UpstreamAuth
from runtime.mcp.oauth.client import OAuthError
from runtime.mcp.resources import (
    READ_RESOURCE_SCHEMA,
    READ_RESOURCE_TOOL,
    read_resource_description,
    render_resource,
)
from runtime.orchestration.naming import public_name
from runtime.plugin_host.tool import ToolContext, ToolError, ToolResult, ToolSpec

logger = logging.getLogger("plugway.mcp")

# The organisation scope of a connection every organisation configuring it shares.
SHARED = "*"


class Placement(NamedTuple):
    """An MCP plugin as one organisation configures it."""

    organisation: str
    ref: PluginRef


# The tool a per-user server offers before anyone has authorized it (so before its tools are known).
AUTHORIZE_TOOL = "authorize"
# The longest end user id a per-user grant is stored under (mcp_oauth_tokens.subject).
MAX_END_USER_CHARS = 256
# An end user's connection unused this long is closed (opened again on their next call).
USER_CONNECTION_IDLE_S = 900.0
# While no end user's connection is open, how often the stored authorizations are asked for one to open.
_USER_PROBE_EVERY_S = 30.0
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def _scope(organisation: str, config: McpConfig, subject: str = "") -> tuple[str, str, str]:
    return (SHARED if config.shared else organisation, config_key(config), subject)


def _per_user(ref: PluginRef) -> bool:
    return ref.mcp is not None and ref.mcp.auth is not None and ref.mcp.auth.per_user


def _quiet_http_client_logs() -> None:
    # httpx2 logs every request at INFO: one line per MCP message over HTTP. An
    # application that set its own level for it keeps that.
    http_logger = logging.getLogger("httpx2")
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)


class McpManager:
    """Owns every MCP connection of the gateway, from start-up to shutdown."""

    def __init__(
        self,
        *,
        list_ttl_s: float = 300.0,
        max_result_chars: int = 20000,
        connect_timeout_s: float = 10.0,
        probe_timeout_s: float = 3.0,
        startup_wait_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        offline_grace_s: float = 60.0,
        ping_interval_s: float = 30.0,
        upstream_auth: UpstreamAuth | None = None,
        user_idle_s: float = USER_CONNECTION_IDLE_S,
    ) -> None:
        self.list_ttl_s = list_ttl_s
        self.user_idle_s = user_idle_s
        self.max_result_chars = max_result_chars
        self.connect_timeout_s = connect_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.startup_wait_s = startup_wait_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.offline_grace_s = offline_grace_s
        self.ping_interval_s = ping_interval_s
        # (organisation or SHARED, configuration, end user or '') -> its connection.
        self._connections: dict[tuple[str, str, str], McpConnection] = {}
        self.upstream_auth = upstream_auth
        # Per-user servers: the tools last listed (kept while no user's connection is open),
        # when each user's connection was last used, when the stored grants were last probed.
        self._user_tools: dict[tuple[str, str, str], list[ToolSpec]] = {}
        self._user_used: dict[tuple[str, str, str], float] = {}
        self._user_probed: dict[tuple[str, str, str], float] = {}
        self._swept_at = time.monotonic()
        self._closing: set[asyncio.Task[None]] = set()
        if upstream_auth is not None:
            upstream_auth.on_authorized(self._authorized)
        # ToolSpecs are rebuilt only when a connection's tool list changes.
        self._specs: dict[tuple[int, str], tuple[int, int, list[ToolSpec]]] = {}
        self._closed = False
        _quiet_http_client_logs()

    def _authorized(self, organisation: str, plugin_id: str, subject: str) -> None:
        """A server was just authorized: its waiting connection tries again now."""
        for key in [k for k in self._user_probed if (k[0], k[2]) == (organisation, plugin_id)]:
            del self._user_probed[key]  # a per-user server's tools can be listed through this user now
        for (scope, _config, who), connection in self._connections.items():
            if scope == organisation and who == subject and plugin_id in connection.plugin_ids:
                connection.wake()

    def _bearer(self, organisation: str, ref: PluginRef, subject: str) -> Any:
        auth = self.upstream_auth
        if ref.mcp is None or ref.mcp.auth is None:
            return None

        async def bearer(refresh: bool) -> str:
            if auth is None:
                raise NotAuthorized("its OAuth tokens are in the gateway's database, which this process has not opened")
            return await auth.bearer(organisation, ref, subject, refresh=refresh)

        return bearer

    def _connection(self, organisation: str, ref: PluginRef, subject: str = "") -> McpConnection:
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        if self._closed:
            raise RuntimeError("the MCP manager is closed")
        key = _scope(organisation, ref.mcp, subject)
        connection = self._connections.get(key)
        if connection is None:
            log_name = ref.id if ref.mcp.shared else f"{ref.id} ({organisation})"
            connection = McpConnection(
                ref.mcp,
                label=ref.id,
                log_name=f"{log_name} for an end user" if subject else log_name,
                bearer=self._bearer(organisation, ref, subject),
                list_ttl_s=self.list_ttl_s,
                max_result_chars=self.max_result_chars,
                connect_timeout_s=self.connect_timeout_s,
                probe_timeout_s=self.probe_timeout_s,
                backoff_initial_s=self.backoff_initial_s,
                backoff_max_s=self.backoff_max_s,
                offline_grace_s=self.offline_grace_s,
                ping_interval_s=self.ping_interval_s,
            )
            self._connections[key] = connection
            connection.start()
        if ref.id not in connection.plugin_ids:
            connection.plugin_ids.append(ref.id)
        if organisation not in connection.organisations:
            connection.organisations.append(organisation)
        return connection

    async def start(self, placements: Iterable[Placement | tuple[str, PluginRef]], *, wait_s: float | None = None) -> None:
        """Connect to every MCP plugin among ``placements`` (organisation, plugin), all at once.

        Waits until each has connected or failed, but at most ``wait_s``
        (default ``startup_wait_s``): servers still connecting then are
        reported ``starting`` and offered once they are up. Never raises
        because a server fails. May be called again with more refs.
        """
        connections = {
            id(c): c
            for c in (
                self._connection(organisation, ref)
                for organisation, ref in placements
                # A per-user server has no organisation connection: each end user's opens on their first call.
                if ref.mcp is not None and not _per_user(ref)
            )
        }
        if not connections:
            return
        if wait_s is None:
            # Never longer than a connect timeout: past it, an attempt has failed anyway.
            wait_s = min(self.startup_wait_s, max(c.connect_timeout_s for c in connections.values()))
        limit = wait_s
        waits = [asyncio.ensure_future(c.wait_first_attempt()) for c in connections.values()]
        _done, pending = await asyncio.wait(waits, timeout=limit)
        for future in pending:
            future.cancel()
        for connection in connections.values():
            if connection.health()["healthy"]:
                continue
            plugins = "/".join(connection.plugin_ids)
            if not connection.config.shared:
                plugins += f" ({', '.join(connection.organisations)})"
            if connection.starting:
                logger.warning(
                    "MCP plugin %s is still starting after %g s; its tools are offered once it is up",
                    plugins,
                    limit,
                )
            else:
                logger.warning(
                    "MCP plugin %s is not available (%s); its tools are not offered until it is",
                    plugins,
                    connection.error or "not connected",
                )

    async def connection_for(self, ref: PluginRef, *, organisation: str) -> McpConnection:
        """The connection serving ``ref`` for ``organisation`` (and no other, unless ``shared``), once it has tried to start."""
        connection = self._connection(organisation, ref)
        await self._started(connection)
        return connection

    async def _started(self, connection: McpConnection) -> bool:
        """Give a connection still starting what is left of its start-up wait; False if that ran out first."""
        if connection.starting:
            remaining = connection.created_at + self.startup_wait_s - time.monotonic()
            if remaining > 0:
                try:
                    await asyncio.wait_for(connection.wait_first_attempt(), remaining)
                except TimeoutError:
                    return False
        return True

    async def tools_for(self, ref: PluginRef, *, organisation: str) -> list[ToolSpec]:
        """The organisation's plugin's tools as ToolSpecs (original MCP names); [] while its server is down."""
        if _per_user(ref):
            return await self._per_user_tools(ref, organisation)
        connection = self._connection(organisation, ref)
        # A plugin first seen now (not passed to start()) gets its start-up wait.
        if not await self._started(connection):
            return []
        tools = await connection.tools_for_offer()
        # A server offering only resources still gets its read_resource tool.
        with_resources = (
            connection.offers_resources
            and connection.offering_cached()
            and not any(t.name == READ_RESOURCE_TOOL for t in connection.tools)
        )
        if not tools and not with_resources:
            return []
        cache_key = (id(connection), ref.id)
        generation = connection.tools_generation
        cached = self._specs.get(cache_key)
        if cached is not None and cached[:2] == (generation, len(tools)):
            return list(cached[2])
        specs = [self._spec(ref, organisation, connection, tool) for tool in tools]
        if with_resources:
            specs.append(self._read_resource_spec(ref.id, connection))
        self._specs[cache_key] = (generation, len(tools), specs)
        return list(specs)

    # ----- servers authorized per end user -----------------------------------------------------

    def _user_connections(self, ref: PluginRef, organisation: str) -> list[McpConnection]:
        assert ref.mcp is not None
        scope, config, _ = _scope(organisation, ref.mcp)
        return [c for (o, k, who), c in self._connections.items() if (o, k) == (scope, config) and who]

    async def _per_user_tools(self, ref: PluginRef, organisation: str) -> list[ToolSpec]:
        """The tools of any end user's connection (all run as the calling user), or the authorize tool."""
        assert ref.mcp is not None
        remembered_key = (organisation, config_key(ref.mcp), ref.id)
        connections = self._user_connections(ref, organisation)
        now = time.monotonic()
        if (
            not connections
            and self.upstream_auth is not None
            and remembered_key not in self._user_tools
            and now - self._user_probed.get(remembered_key, -math.inf) >= _USER_PROBE_EVERY_S
        ):
            # After a restart: learn the tool list through a user who authorized earlier.
            self._user_probed[remembered_key] = now
            known = [a["subject"] for a in await self.upstream_auth.authorizations(organisation, ref) if a["subject"]]
            if known:
                connection = self._connection(organisation, ref, known[0])
                self._user_used[_scope(organisation, ref.mcp, known[0])] = now
                connections = [connection]
                try:
                    await asyncio.wait_for(connection.wait_first_attempt(), self.startup_wait_s)
                except TimeoutError:
                    pass
        lister = next((c for c in connections if c.offered_tools()), None)
        if lister is None:
            remembered = self._user_tools.get(remembered_key)
            return list(remembered) if remembered else [self._authorize_spec(ref, organisation)]
        tools = lister.offered_tools()
        cache_key = (id(lister), ref.id)
        cached = self._specs.get(cache_key)
        if cached is not None and cached[:2] == (lister.tools_generation, len(tools)):
            return list(cached[2])
        specs = [self._user_spec(ref, organisation, tool) for tool in tools]
        self._specs[cache_key] = (lister.tools_generation, len(tools), specs)
        self._user_tools[remembered_key] = specs
        return list(specs)

    def _sweep_idle_user_connections(self, now: float, *, keep: tuple[str, str, str]) -> None:
        """Close end users' connections nobody used for ``user_idle_s`` (checked at most once a minute)."""
        if now - self._swept_at < min(60.0, self.user_idle_s):
            return
        self._swept_at = now
        for key, connection in list(self._connections.items()):
            if not key[2] or key == keep or connection.busy:
                continue
            if now - self._user_used.get(key, connection.created_at) < self.user_idle_s:
                continue
            del self._connections[key]
            self._user_used.pop(key, None)
            for spec_key in [k for k in self._specs if k[0] == id(connection)]:
                del self._specs[spec_key]
            task = asyncio.create_task(connection.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _authorize_spec(self, ref: PluginRef, organisation: str) -> ToolSpec:
        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            await self._user_connection(ref, organisation, ctx)
            return (
                f"The user has authorized {ref.id}: its tools are offered from the next request on."
            )

        return ToolSpec(
            plugin_id=ref.id,
            name=AUTHORIZE_TOOL,
            description=(
                f"Connect {ref.id} to the user's own account: its tools act as the user, who must "
                "authorize it first. Returns a link for the user to open; the tools are offered once they have."
            ),
            parameters=_NO_ARGUMENTS,
            invoke=invoke,
            source="mcp",
            annotations={"readOnlyHint": True},
        )

    def _user_spec(self, ref: PluginRef, organisation: str, tool: Any) -> ToolSpec:
        name: str = tool.name

        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            return await self._call_as_user(ref, organisation, name, arguments, ctx)

        return _tool_spec(ref.id, tool, invoke)

    async def _call_as_user(
        self,
        ref: PluginRef,
        organisation: str,
        tool: str,
        arguments: dict[str, Any],
        ctx: ToolContext | None,
        sampling_refusal: str = NO_MODEL_FOR_SAMPLING,
    ) -> str | ToolResult:
        connection = await self._user_connection(ref, organisation, ctx)
        try:
            return await connection.call_tool(tool, arguments, ctx, sampling_refusal=sampling_refusal)
        except ToolError:
            subject = ctx.end_user if ctx is not None else None
            if subject and self.upstream_auth is not None:
                # The grant may have ended during the call (revoked upstream): then the user gets the link.
                try:
                    await self.upstream_auth.bearer(organisation, ref, subject)
                except NotAuthorized:
                    raise ToolError(self._authorize_again(ref, organisation, subject)) from None
                except OAuthError:
                    pass
            raise

    def _authorize_again(self, ref: PluginRef, organisation: str, subject: str) -> str:
        assert self.upstream_auth is not None
        link = self.upstream_auth.user_link(organisation, ref, subject)
        return f"The user has not authorized {ref.id} yet. Give the user this link to authorize it, then try again: {link}"

    async def _user_connection(self, ref: PluginRef, organisation: str, ctx: ToolContext | None) -> McpConnection:
        """The calling end user's connection; a ToolError with the link if they have not authorized."""
        subject = ctx.end_user if ctx is not None else None
        if not subject:
            raise ToolError(
                f"{ref.id} acts as the end user, and this request names none: the request must identify "
                "its user (the 'user' or 'safety_identifier' field, an endpoint session, a WhatsApp contact)."
            )
        if len(subject) > MAX_END_USER_CHARS:
            raise ToolError(f"{ref.id} acts as the end user, whose id is longer than {MAX_END_USER_CHARS} characters.")
        auth = self.upstream_auth
        if auth is None:
            raise ToolError(f"{ref.id} needs OAuth, which this gateway is not set up for.")
        try:
            await auth.bearer(organisation, ref, subject)
        except NotAuthorized:
            link = auth.user_link(organisation, ref, subject)
            message = f"To use {ref.id}, the user must first connect their account. Open this link to authorize it: {link}"
            accepted = False
            if ctx is not None and ctx.ask_user_to_open is not None:
                # /mcp can show the link to its client's user (URL elicitation) and wait for them.
                accepted = await ctx.ask_user_to_open(message, link)
            if not accepted:
                raise ToolError(self._authorize_again(ref, organisation, subject)) from None
            try:
                await auth.bearer(organisation, ref, subject)
            except NotAuthorized:
                raise ToolError(f"The user has not completed the authorization of {ref.id}: {link}") from None
        except OAuthError as exc:
            raise ToolError(f"{ref.id}: cannot obtain the user's token: {exc}") from None
        connection = self._connection(organisation, ref, subject)
        now = time.monotonic()
        key = _scope(organisation, ref.mcp, subject)  # type: ignore[arg-type]  # an MCP plugin
        self._user_used[key] = now
        self._sweep_idle_user_connections(now, keep=key)
        if connection.starting:
            try:
                await asyncio.wait_for(connection.wait_first_attempt(), connection.connect_timeout_s)
            except TimeoutError:
                raise ToolError(connection.unavailable_message()) from None
        return connection

    # ----- specs ----------------------------------------------------------------------------------

    def _spec(self, ref: PluginRef, organisation: str, connection: McpConnection, tool: Any) -> ToolSpec:
        name: str = tool.name

        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            return await self._call_shared(ref, organisation, connection, name, arguments, ctx)

        return _tool_spec(ref.id, tool, invoke)

    @staticmethod
    def _read_resource_spec(plugin_id: str, connection: McpConnection) -> ToolSpec:
        async def invoke(arguments: dict[str, Any], ctx: ToolContext) -> str | ToolResult:
            uri = arguments.get("uri")
            if not isinstance(uri, str) or not uri.strip():
                raise ToolError("Give 'uri': the URI of the resource to read.")
            result = await connection.read_resource(uri.strip())
            return render_resource(result, connection.max_result_chars)

        return ToolSpec(
            plugin_id=plugin_id,
            name=READ_RESOURCE_TOOL,
            description=read_resource_description(
                plugin_id, connection.resources, connection.resource_templates
            ),
            parameters=READ_RESOURCE_SCHEMA,
            invoke=invoke,
            source="mcp",
            annotations={"readOnlyHint": True},
        )

    async def call(
        self,
        ref: PluginRef,
        tool: str,
        arguments: dict[str, Any],
        ctx: ToolContext | None = None,
        *,
        organisation: str,
        sampling_refusal: str = NO_MODEL_FOR_SAMPLING,
    ) -> str | ToolResult:
        """Call one tool of an organisation's MCP plugin by its original name (raises ToolError).

        ``read_resource`` reads a resource of a server that offers resources
        (unless the server has a tool of that name). The server's sampling
        requests during the call go to ``ctx.sample``; without one they are
        declined with ``sampling_refusal``. A per-user server's call runs as ``ctx.end_user``.
        """
        if _per_user(ref):
            if tool == AUTHORIZE_TOOL and not any(c.offered_tools() for c in self._user_connections(ref, organisation)):
                return await self._authorize_spec(ref, organisation).invoke(arguments, ctx or _bare_context(organisation, ref))
            return await self._call_as_user(ref, organisation, tool, arguments, ctx, sampling_refusal)
        connection = self._connection(organisation, ref)
        if connection.starting:
            try:
                await asyncio.wait_for(connection.wait_first_attempt(), connection.connect_timeout_s)
            except TimeoutError:
                raise ToolError(connection.unavailable_message()) from None
        if tool == READ_RESOURCE_TOOL and connection.offers_resources:
            if not any(t.name == READ_RESOURCE_TOOL for t in connection.tools):
                spec = self._read_resource_spec(ref.id, connection)
                context = ctx or _bare_context(organisation, ref)
                result: str | ToolResult = await spec.invoke(arguments, context)
                return result
        return await self._call_shared(ref, organisation, connection, tool, arguments, ctx, sampling_refusal)

    async def _call_shared(
        self,
        ref: PluginRef,
        organisation: str,
        connection: McpConnection,
        tool: str,
        arguments: dict[str, Any],
        ctx: ToolContext | None,
        sampling_refusal: str = NO_MODEL_FOR_SAMPLING,
    ) -> str | ToolResult:
        """A call on the organisation's connection; a failure of an OAuth server whose authorization
        ended (forgotten in any process, or revoked upstream) says so rather than how the connection fell."""
        try:
            return await connection.call_tool(tool, arguments, ctx, sampling_refusal=sampling_refusal)
        except ToolError:
            if ref.mcp is not None and ref.mcp.auth is not None and self.upstream_auth is not None:
                try:
                    await self.upstream_auth.bearer(organisation, ref)
                except NotAuthorized as exc:
                    raise ToolError(f"{ref.id}: {exc}") from None
                except OAuthError:
                    pass
            raise

    def connection_health(self, ref: PluginRef, *, organisation: str) -> dict[str, Any]:
        """The health entry of the connection serving ``ref`` for ``organisation`` (see :meth:`health`)."""
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        if _per_user(ref):
            return self._per_user_health(ref, organisation)
        connection = self._connections.get(_scope(organisation, ref.mcp))
        if connection is None:
            return _not_started(ref.mcp)
        return connection.health()

    def _per_user_health(self, ref: PluginRef, organisation: str) -> dict[str, Any]:
        """A per-user server is as healthy as its end users' connections (no connection yet is no failure)."""
        assert ref.mcp is not None
        connections = self._user_connections(ref, organisation)
        ready = [c for c in connections if c.state.value == "ready"]
        if ready:
            entry = ready[0].health()
        elif connections:
            entry = connections[0].health()
        else:
            entry = {**_not_started(ref.mcp), "healthy": True, "state": "per_user", "error": None}
        return {**entry, "per_user": True, "user_connections": len(connections), "user_connections_ready": len(ready)}

    def health(self) -> dict[str, dict[str, Any]]:
        """plugin id -> the state of its server, for authenticated surfaces and logs.

        Each entry: ``healthy``, ``state`` (``starting``, ``ready``,
        ``reconnecting``, ``backoff``, ``closed``), ``transport``, ``target``
        (the command line or URL), ``error``, ``last_error`` and ``last_error_at``
        (the last failure, kept once the server is back), ``tools`` (the names offered),
        ``unsupported_tools``, ``resources`` (how many), ``resource_templates``,
        ``prompts``, ``pid``, ``protocol``, ``retry_in_s``, ``restarts``,
        ``organisations`` (those the connection serves) and ``shared``. The
        public ``/readyz`` shows none of it.

        A plugin id served by one connection is listed under its id. When several
        connections serve one plugin id (one per organisation, the default), each is
        listed as ``<id>@<organisation>`` (``<id>@shared`` for a shared one).
        """
        report: dict[str, dict[str, Any]] = {}
        for key, _plugin_id, connection in self._entries():
            report[key] = connection.health()
        return report

    def _entries(self) -> list[tuple[str, str, McpConnection]]:
        """(report key, plugin id, connection) for every plugin id of every connection (see :meth:`health`).

        A per-user server's end users' connections are one entry (a ready one stands for them):
        reports and metrics labels stay one per server, however many users it has.
        """
        pairs: list[tuple[str, McpConnection]] = []
        per_user: dict[tuple[str, str], list[McpConnection]] = {}
        for (scope, config, subject), connection in self._connections.items():
            if subject:
                per_user.setdefault((scope, config), []).append(connection)
            else:
                pairs.extend((plugin_id, connection) for plugin_id in connection.plugin_ids)
        for members in per_user.values():
            standing = next((c for c in members if c.state.value == "ready"), members[0])
            pairs.extend((plugin_id, standing) for plugin_id in standing.plugin_ids)
        served_by: dict[str, int] = {}
        for plugin_id, _connection in pairs:
            served_by[plugin_id] = served_by.get(plugin_id, 0) + 1
        entries: list[tuple[str, str, McpConnection]] = []
        taken: dict[str, Any] = {}
        for plugin_id, connection in pairs:
            key = plugin_id
            if served_by[plugin_id] > 1:
                key = f"{plugin_id}@{'shared' if connection.config.shared else connection.organisations[0]}"
            key = _unique(taken, key)
            taken[key] = True
            entries.append((key, plugin_id, connection))
        return entries

    def describe(self) -> dict[str, dict[str, Any]]:
        """Like :meth:`health`, plus each tool's details and the names the model sees.

        Adds ``server`` (name, version), ``tool_details`` (``name``,
        ``public_name``, ``title``, ``description``, ``annotations``,
        ``task_support``, ``offered``; the ``read_resource`` tool plugway adds
        has ``added_by_plugway``), ``resource_list``, ``resource_template_list``,
        ``prompt_list``, ``roots`` and ``sampling_model``.
        """
        report: dict[str, dict[str, Any]] = {}
        for key, plugin_id, connection in self._entries():
            report[key] = _described(plugin_id, connection)
        return report

    def describe_plugin(self, ref: PluginRef, *, organisation: str) -> dict[str, Any]:
        """The :meth:`describe` entry of one organisation's MCP plugin."""
        if ref.mcp is None:
            raise ValueError(f"plugin '{ref.id}' is not an MCP plugin")
        connection = self._connections.get(_scope(organisation, ref.mcp))
        if connection is None:
            return {**_not_started(ref.mcp), "server": None, "tool_details": [], "resource_list": [],
                    "resource_template_list": [], "prompt_list": [], "roots": ref.mcp.roots or [],
                    "sampling_model": ref.mcp.sampling_model}
        return _described(ref.id, connection)

    async def aclose(self) -> None:
        """Close every connection and reap every child process group."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._specs.clear()
        await asyncio.gather(*(c.aclose() for c in connections), return_exceptions=True)


def _described(plugin_id: str, connection: McpConnection) -> dict[str, Any]:
    described = connection.describe()
    details = [
        {**tool, "public_name": public_name(plugin_id, tool["name"])} for tool in described["tool_details"]
    ]
    if connection.offers_resources and not any(t["name"] == READ_RESOURCE_TOOL for t in details):
        details.append(
            {
                "name": READ_RESOURCE_TOOL,
                "public_name": public_name(plugin_id, READ_RESOURCE_TOOL),
                "title": None,
                "description": read_resource_description(
                    plugin_id, connection.resources, connection.resource_templates
                ),
                "annotations": {"readOnlyHint": True},
                "task_support": None,
                "offered": True,
                "added_by_plugway": True,
            }
        )
    return {**described, "tool_details": details}


def _bare_context(organisation: str, ref: PluginRef) -> ToolContext:
    return ToolContext(organisation_id=organisation, plugin_id=ref.id, request_id="")


def _unique(report: dict[str, Any], plugin_id: str) -> str:
    key, n = plugin_id, 1
    while key in report:
        n += 1
        key = f"{plugin_id}@{n}"
    return key


def _not_started(config: McpConfig) -> dict[str, Any]:
    return {
        "healthy": False,
        "state": "closed",
        "transport": "stdio" if config.command else "http",
        "target": describe_target(config),
        "error": "not started",
        "last_error": None,
        "last_error_at": None,
        "tools": [],
        "unsupported_tools": [],
        "resources": 0,
        "resource_templates": [],
        "prompts": [],
        "pid": None,
        "protocol": None,
        "retry_in_s": None,
        "restarts": 0,
        "organisations": [],
        "shared": config.shared,
    }


def _tool_spec(plugin_id: str, tool: Any, invoke: Callable[[dict[str, Any], ToolContext], Awaitable[str | ToolResult]]) -> ToolSpec:
    """An MCP server's tool as a ToolSpec, called through ``invoke``."""
    return ToolSpec(
        plugin_id=plugin_id,
        name=tool.name,
        description=tool.description or tool.title or tool.name,
        parameters=dict(tool.input_schema),
        invoke=invoke,
        source="mcp",
        annotations=tool_annotations(tool),
    )
