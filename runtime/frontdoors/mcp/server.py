"""The MCP server behind ``/mcp``: the calling key's organisation's plugin tools, resources and prompts.

Built on the SDK's low-level ``Server``: ``tools/list``, ``tools/call``,
``subscriptions/listen``, and for the organisation's MCP servers' resources
and prompts (named as :mod:`runtime.frontdoors.mcp.offerings` says)
``resources/list``, ``resources/templates/list``, ``resources/read``,
``resources/subscribe``, ``prompts/list``, ``prompts/get`` and
``completion/complete``. Every handler reads the caller
(the gateway key, already authenticated by the endpoint) from the HTTP
request that carried the message, so one server serves every organisation
and each sees only its own tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import orjson
import pydantic
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import runtime
from runtime.admission import admit_tools, grants_for, organisation_not_configured
from runtime.config import OrganisationConfig, PluginRef
from runtime.errors import GatewayError
from runtime.frontdoors.mcp import offerings
from runtime.frontdoors.mcp.changes import ToolListChanges
from runtime.frontdoors.mcp.elicitation import (
    ParkedCalls,
    client_modes,
    session_elicitor,
    url_prompt,
)
from runtime.gateway import Gateway
from runtime.mcp.connection import ServerRefused
from runtime.mcp.resources import READ_RESOURCE_TOOL
from runtime.orchestration.events import ToolCallFinished
from runtime.orchestration.naming import public_name
from runtime.orchestration.tools import BoundTool, Toolset, error_of, outcome_status, run_tool_call
from runtime.plugin_host.tool import Elicitor, Sampler, ToolError
from runtime.request import DoorRules, PluginGrant, ToolsContext
from runtime.storage.keys import KeyInfo

log = logging.getLogger("plugway.mcp_server")

# Tools per tools/list page; larger catalogues are paged with nextCursor.
PAGE_SIZE = 100
# JSON-RPC error code (implementation-defined range) of a call the gateway refused before
# running it: rate limit, budget, organisation. ``data`` carries the HTTP status, the
# OpenAI-style ``code`` and ``type``, and ``retry_after_s`` when there is one.
GATEWAY_REFUSED = -32001
# A tool call takes from the key's limits; listing tools (and listening for changes) does not.
MCP_CALL_DOOR = DoorRules("mcp", scope="mcp")
MCP_LISTING_DOOR = DoorRules("mcp", scope="mcp", limits=False)

INSTRUCTIONS = (
    "plugway: the plugin tools of your gateway key's organisation, named <plugin-id>__<tool>, and its MCP "
    "servers' prompts (<plugin-id>__<prompt>) and resources (plugway://<plugin-id>/<the server's URI>). "
    "Each call, resource read and prompt counts against the key's rate limits and the organisation's budget."
)

# The organisation of the HTTP request being served, for the SDK's synchronous schema look-up.
caller_organisation: ContextVar[str | None] = ContextVar("plugway_mcp_caller_organisation", default=None)


@dataclass(frozen=True, slots=True)
class Caller:
    key: KeyInfo
    request_id: str
    session_id: str | None  # the handshake-era Mcp-Session-Id, if any
    # Who signed in, when the Bearer is an OAuth access token (runtime.oauth puts its grant on
    # the request's state): the end user per-user upstream MCP servers run as.
    end_user: str | None = None


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """Who sent this message: the endpoint stored the key in the HTTP request's state."""
    request = ctx.request
    state = request.scope.get("state", {}) if request is not None else {}
    key = state.get("key")
    if request is None or not isinstance(key, KeyInfo):
        # The endpoint authenticates every request before the SDK sees it: this is a wiring bug.
        raise MCPError(types.INTERNAL_ERROR, "The request reached the MCP server without a gateway key.")
    subject = getattr(state.get("oauth"), "subject", None)
    return Caller(
        key=key,
        request_id=str(state.get("request_id") or ""),
        session_id=request.headers.get(MCP_SESSION_ID_HEADER),
        end_user=f"mcp:{subject}" if isinstance(subject, str) and subject else None,
    )


def refused(error: GatewayError) -> MCPError:
    """A gateway refusal (limits, budget, organisation) as a JSON-RPC error the client can act on."""
    data: dict[str, Any] = {"status": error.status, "code": error.code, "type": error.type}
    retry_after = error.headers.get("Retry-After")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            data["retry_after_s"] = float(retry_after)
    return MCPError(GATEWAY_REFUSED, error.message, data)


@contextlib.contextmanager
def mcp_errors() -> Iterator[None]:
    """Gateway refusals become :data:`GATEWAY_REFUSED` errors; anything unexpected a generic one (no internals)."""
    try:
        yield
    except MCPError:
        raise
    except GatewayError as exc:
        raise refused(exc) from None
    except Exception:
        log.exception("MCP request failed")
        raise MCPError(types.INTERNAL_ERROR, "The gateway had an internal error.") from None


def mcp_tool(bound: BoundTool) -> types.Tool:
    schema = bound.spec.parameters
    if "type" not in schema:
        # MCP requires an object schema at the root; some servers leave the type implicit.
        schema = {"type": "object", **schema}
    annotations = None
    if bound.spec.annotations:
        with contextlib.suppress(pydantic.ValidationError):
            annotations = types.ToolAnnotations.model_validate(bound.spec.annotations)
    return types.Tool(
        name=bound.public_name, description=bound.spec.description, input_schema=schema, annotations=annotations
    )


def tool_result(finished: ToolCallFinished) -> types.CallToolResult:
    """A finished call as MCP shapes it.

    Errors with ``isError`` and their message as text, images as image
    content, a result that is a JSON object also as ``structuredContent``.
    """
    if not finished.ok:
        error = error_of(finished.content)
        text = error[1] if error else finished.content
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
    blocks: list[types.ContentBlock] = [types.TextContent(text=finished.content)]
    blocks.extend(types.ImageContent(data=data, mime_type=mime_type) for mime_type, data in finished.images)
    blocks.extend(types.AudioContent(data=data, mime_type=mime_type) for mime_type, data in finished.audio)
    structured: Any = None
    if finished.content.startswith("{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            structured = orjson.loads(finished.content)
    return types.CallToolResult(content=blocks, structured_content=structured if isinstance(structured, dict) else None)


class ProgressRelay:
    """Forwards a tool's progress reports to the client, in order, without holding the tool up."""

    def __init__(self, session: ServerSession) -> None:
        self._session = session
        self._updates: asyncio.Queue[tuple[float, float | None, str | None] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def report(self, progress: float, total: float | None, message: str | None) -> None:
        self._updates.put_nowait((progress, total, message))

    async def _forward(self) -> None:
        while (update := await self._updates.get()) is not None:
            try:
                await self._session.report_progress(*update)
            except Exception as exc:
                # Progress is advisory: a client that stopped reading must not fail the call.
                log.debug("progress not delivered: %s", exc)

    async def __aenter__(self) -> ProgressRelay:
        self._task = asyncio.get_running_loop().create_task(self._forward())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        assert self._task is not None
        if exc_type is None:
            self._updates.put_nowait(None)  # deliver what was reported before the result
            await self._task
        else:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class _PluginToolsServer(Server[Any]):
    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        # Handshake-era clients learn here that tools/, resources/ and prompts/list_changed will come.
        changes = NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True)
        return super().create_initialization_options(
            notification_options or changes, experimental_capabilities, extensions
        )


class PluginToolServer:
    """The organisation-aware MCP server; :attr:`server` is what the session manager runs."""

    def __init__(
        self, gateway: Gateway, *, page_size: int = PAGE_SIZE, poll_s: float = 1.0, session_idle_s: float = 1800.0
    ) -> None:
        self.gateway = gateway
        self.page_size = page_size
        self.changes = ToolListChanges(
            self._organisation_toolset, poll_s=poll_s, session_idle_s=session_idle_s, offerings_of=self._offerings_identity
        )
        self.server = _PluginToolsServer(
            "plugway",
            version=runtime.__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_subscriptions_listen=self.listen,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            on_completion=self.complete,
            on_subscribe_resource=self.subscribe_resource,
            on_unsubscribe_resource=self.unsubscribe_resource,
            get_tool_input_schema=self.input_schema,
        )
        self.parked = ParkedCalls()
        # (handshake-era session id, resource URI) -> the function that stops watching it.
        self._session_watches: dict[tuple[str, str], Callable[[], None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        self.parked.close()
        for unwatch in self._session_watches.values():
            unwatch()
        self._session_watches.clear()
        await self.changes.aclose()

    # -- tools of an organisation -----------------------------------------------------

    async def _toolset(self, organisation: OrganisationConfig, grants: Sequence[PluginGrant]) -> Toolset:
        # No tool limit: an MCP client pages through tools/list, so tool search is never needed here.
        toolset = await self.gateway.catalog.toolset(organisation, grants)
        self.changes.seen(organisation.id, toolset)
        return toolset

    async def _organisation_toolset(self, organisation_id: str) -> Toolset | None:
        organisation = self.gateway.organisation(organisation_id)
        if organisation is None:
            return None
        return await self.gateway.catalog.toolset(organisation, grants_for(organisation, None))

    async def _offerings_identity(self, organisation_id: str) -> tuple[Any, Any]:
        """What a client sees of the organisation's resources and prompts: a change is worth a list_changed."""
        organisation = self.gateway.organisation(organisation_id)
        if organisation is None:
            return (), ()
        servers = await offerings.servers_of(self.gateway.mcp, organisation)
        resources = tuple((str(r.uri), r.name, r.description) for r in offerings.resources(servers))
        templates = tuple((t.uri_template, t.name, t.description) for t in offerings.templates(servers))
        prompts = tuple(p.model_dump_json() for p in offerings.prompts(servers))
        return resources + templates, prompts

    async def _admit_listing(self, caller: Caller) -> tuple[ToolsContext, Toolset]:
        # Listing is admitted (organisation, budget) but spends none of the key's rate limit.
        admitted = await admit_tools(self.gateway, MCP_LISTING_DOOR, key=caller.key, request_id=caller.request_id)
        return admitted, await self._toolset(admitted.organisation, admitted.plugins)

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """The SDK checks ``Mcp-Param-*`` headers against this; None (unknown yet) skips that check."""
        organisation_id = caller_organisation.get()
        toolset = self.changes.latest(organisation_id) if organisation_id else None
        bound = toolset.by_name.get(name) if toolset is not None else None
        return bound.spec.parameters if bound is not None else None

    # -- handlers -----------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        with mcp_errors():
            caller = caller_of(ctx)
            admitted, toolset = await self._admit_listing(caller)
            if caller.session_id is not None and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                self.changes.session_listed(caller.session_id, admitted.organisation.id, ctx.session, toolset)
            names = list(toolset.by_name)
            start = self._page_start(names, params.cursor if params is not None else None)
            page = names[start : start + self.page_size]
            more = start + self.page_size < len(names)
            return types.ListToolsResult(
                tools=[mcp_tool(toolset.by_name[name]) for name in page],
                next_cursor=page[-1] if more else None,
                # Per key and changing whenever a plugin's tools do: never shared, never fresh for long.
                ttl_ms=0,
                cache_scope="private",
            )

    @staticmethod
    def _page_start(names: list[str], cursor: str | None) -> int:
        # The cursor is the last name of the previous page.
        if not cursor:
            return 0
        try:
            return names.index(cursor) + 1
        except ValueError:
            raise MCPError(
                types.INVALID_PARAMS, "The cursor is no longer valid (the tool list changed): list again from the start."
            ) from None

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        with mcp_errors():
            caller = caller_of(ctx)
            if params.request_state is not None:
                # A 2026 client's retry carrying the answer to the question its call asked.
                parked = self.parked.resume(caller.key.id, params.request_state, params.input_responses)
                return await self._outcome(parked)
            organisation = self._organisation(caller)
            toolset = await self._toolset(organisation, grants_for(organisation, None))
            if params.name not in toolset.by_name:
                # Before admission: a call that cannot run spends none of the key's rate limit.
                raise MCPError(
                    types.INVALID_PARAMS,
                    f"Unknown tool: '{params.name}'. tools/list shows the tools of this key's organisation.",
                )
            admitted = await admit_tools(self.gateway, MCP_CALL_DOOR, key=caller.key, request_id=caller.request_id)
            admitted.end_user = caller.end_user
            modes = client_modes(ctx)
            if modes and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                # No requests to a 2026 client: a question comes back as an InputRequiredResult.
                parked = self.parked.start(
                    caller.key.id, modes, lambda elicit: self._run(ctx, admitted, toolset, params, elicit)
                )
                return await self._outcome(parked)
            elicitor = session_elicitor(ctx, modes) if modes else None
            finished = await self._run(ctx, admitted, toolset, params, elicitor)
            return tool_result(finished)

    async def _outcome(self, parked: Any) -> types.CallToolResult | types.InputRequiredResult:
        outcome = await self.parked.outcome(parked)
        return outcome if isinstance(outcome, types.InputRequiredResult) else tool_result(outcome)

    def _organisation(self, caller: Caller) -> OrganisationConfig:
        organisation = self.gateway.organisation(caller.key.organisation_id)
        if organisation is None:
            raise organisation_not_configured()
        return organisation

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        admitted: ToolsContext,
        toolset: Toolset,
        params: types.CallToolRequestParams,
        elicitor: Elicitor | None = None,
    ) -> ToolCallFinished:
        """Run the call exactly as the orchestration loop does, and record it (source ``mcp``) however it ends."""
        call = {
            "id": admitted.request_id,
            "type": "function",
            "function": {"name": params.name, "arguments": orjson.dumps(params.arguments or {}).decode()},
        }
        started = time.perf_counter()
        status = "cancelled"  # the client cancelled the call, or went away
        try:
            async with ProgressRelay(ctx.session) as progress:
                finished = await run_tool_call(
                    call,
                    toolset,
                    organisation_id=admitted.organisation.id,
                    request_id=admitted.request_id,
                    round_no=0,
                    config=self.gateway.settings.orchestration,
                    on_progress=progress.report,
                    sampler=self._sampler(admitted, toolset.by_name[params.name]),
                    elicitor=elicitor,
                    # A per-user server's authorization link is shown to the client's user (URL mode).
                    ask_user_to_open=url_prompt(elicitor) if elicitor is not None else None,
                    # A per-user upstream server runs as the OAuth subject (set where /mcp signs clients in).
                    end_user=admitted.end_user,
                )
            status = outcome_status(finished)
            return finished
        finally:
            self.gateway.record_tool_call(admitted, params.name, started=started, status=status)

    def _sampler(self, admitted: ToolsContext, bound: BoundTool) -> Sampler | None:
        """No loop, so no request model here: an MCP server's sampling goes to its ``sampling_model``, if set."""
        model_id = bound.ref.mcp.sampling_model if bound.ref.mcp is not None else None
        model = self.gateway.router.model(model_id) if model_id else None
        if model is None:
            return None
        factory = self.gateway.orchestrator.sampling
        return factory(admitted.with_model(model, admitted.door), admitted.request_id) if factory is not None else None

    # -- resources and prompts of the organisation's MCP servers ------------------------------

    async def _servers(self, caller: Caller) -> list[offerings.Server]:
        # Listing is admitted (organisation, budget) but spends none of the key's rate limit.
        admitted = await admit_tools(self.gateway, MCP_LISTING_DOOR, key=caller.key, request_id=caller.request_id)
        return await offerings.servers_of(self.gateway.mcp, admitted.organisation)

    def _cursor(self, params: types.PaginatedRequestParams | None) -> str | None:
        return params.cursor if params is not None else None

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        with mcp_errors():
            servers = await self._servers(caller_of(ctx))
            items, cursor = offerings.page(offerings.resources(servers), self._cursor(params), self.page_size)
            return types.ListResourcesResult(resources=items, next_cursor=cursor, ttl_ms=0, cache_scope="private")

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        with mcp_errors():
            servers = await self._servers(caller_of(ctx))
            items, cursor = offerings.page(offerings.templates(servers), self._cursor(params), self.page_size)
            return types.ListResourceTemplatesResult(
                resource_templates=items, next_cursor=cursor, ttl_ms=0, cache_scope="private"
            )

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        with mcp_errors():
            servers = await self._servers(caller_of(ctx))
            items, cursor = offerings.page(offerings.prompts(servers), self._cursor(params), self.page_size)
            return types.ListPromptsResult(prompts=items, next_cursor=cursor, ttl_ms=0, cache_scope="private")

    async def _mcp_plugin(self, caller: Caller, uri: str) -> tuple[OrganisationConfig, PluginRef, str]:
        """(organisation, plugin, the server's own URI) of a resource URI; only the caller's organisation's plugins."""
        organisation = self._organisation(caller)
        split = offerings.split_uri(uri)
        ref = organisation.plugin(split[0]) if split is not None else None
        if split is None or ref is None or ref.mcp is None or self.gateway.mcp is None:
            raise offerings.unknown_resource(uri)
        return organisation, ref, split[1]

    async def _served(self, admitted: ToolsContext, record_as: str, request: Any) -> Any:
        """A request to an upstream server made on a client's behalf: timed out, recorded, errors said."""
        started = time.perf_counter()
        status = "cancelled"
        try:
            async with asyncio.timeout(self.gateway.settings.orchestration.tool_timeout_s):
                result = await request
            status = "ok"
            return result
        except TimeoutError:
            status = "timeout"
            raise MCPError(types.INTERNAL_ERROR, "The MCP server did not answer in time.") from None
        except ServerRefused as exc:
            status = "tool_error"
            raise MCPError(exc.code, str(exc)) from None
        except ToolError as exc:
            status = "tool_failed"
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        finally:
            self.gateway.record_tool_call(admitted, record_as, started=started, status=status)

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        with mcp_errors():
            caller = caller_of(ctx)
            organisation, ref, uri = await self._mcp_plugin(caller, params.uri)
            # Before admission: a URI that names no server spends none of the key's rate limit.
            admitted = await admit_tools(self.gateway, MCP_CALL_DOOR, key=caller.key, request_id=caller.request_id)
            assert self.gateway.mcp is not None  # _mcp_plugin checked it
            connection = await self.gateway.mcp.connection_for(ref, organisation=organisation.id)
            result = await self._served(admitted, public_name(ref.id, READ_RESOURCE_TOOL), connection.read_resource(uri))
            return offerings.read_result(ref.id, result)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        with mcp_errors():
            caller = caller_of(ctx)
            found = offerings.prompt_named(await self._servers(caller), params.name)
            if found is None:
                raise MCPError(
                    types.INVALID_PARAMS,
                    f"Unknown prompt: '{params.name}'. prompts/list shows the prompts of this key's organisation.",
                )
            server, name = found
            admitted = await admit_tools(self.gateway, MCP_CALL_DOOR, key=caller.key, request_id=caller.request_id)
            result = await self._served(
                admitted, f"prompt:{params.name}", server.connection.get_prompt(name, params.arguments)
            )
            return offerings.prompt_result(server.plugin_id, result)

    async def complete(
        self, ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """Completions for a prompt's or a resource template's argument, from the server that owns it."""
        with mcp_errors():
            caller = caller_of(ctx)
            servers = await self._servers(caller)
            ref: types.PromptReference | types.ResourceTemplateReference
            if isinstance(params.ref, types.PromptReference):
                found = offerings.prompt_named(servers, params.ref.name)
                if found is None:
                    raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: '{params.ref.name}'.")
                server, name = found
                ref = params.ref.model_copy(update={"name": name})
            else:
                split = offerings.split_uri(params.ref.uri)
                server_found = offerings.server_named(servers, split[0]) if split is not None else None
                if split is None or server_found is None:
                    raise offerings.unknown_resource(params.ref.uri)
                server = server_found
                ref = params.ref.model_copy(update={"uri": split[1]})
            context = params.context.arguments if params.context is not None else None
            try:
                async with asyncio.timeout(self.gateway.settings.orchestration.tool_timeout_s):
                    return await server.connection.complete(
                        ref, {"name": params.argument.name, "value": params.argument.value}, context
                    )
            except TimeoutError:
                raise MCPError(types.INTERNAL_ERROR, "The MCP server did not answer in time.") from None
            except ServerRefused as exc:
                raise MCPError(exc.code, str(exc)) from None
            except ToolError as exc:
                raise MCPError(types.INTERNAL_ERROR, str(exc)) from None

    # -- resource subscriptions --------------------------------------------------------------

    def _soon(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch(self, organisation: OrganisationConfig, uri: str, on_update: Callable[[str], None]) -> Callable[[], None] | None:
        """Watch a ``/mcp`` resource URI on the organisation's own connection; None if it names no server of it."""
        split = offerings.split_uri(uri)
        ref = organisation.plugin(split[0]) if split is not None else None
        if split is None or ref is None or ref.mcp is None or self.gateway.mcp is None:
            return None
        connection = await self.gateway.mcp.connection_for(ref, organisation=organisation.id)
        return await connection.watch_resource(split[1], lambda _original: on_update(uri))

    async def subscribe_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        """A handshake-era client's ``resources/subscribe``: updates arrive on its session's GET stream."""
        with mcp_errors():
            caller = caller_of(ctx)
            await admit_tools(self.gateway, MCP_LISTING_DOOR, key=caller.key, request_id=caller.request_id)
            session = ctx.session
            watch_key = (caller.session_id or str(id(session)), params.uri)
            if watch_key in self._session_watches:
                return types.EmptyResult()

            async def tell(uri: str) -> None:
                try:
                    await session.send_resource_updated(uri)
                except Exception:
                    # The session is gone: stop watching for it.
                    unwatch = self._session_watches.pop(watch_key, None)
                    if unwatch is not None:
                        unwatch()

            unwatch = await self._watch(self._organisation(caller), params.uri, lambda uri: self._soon(tell(uri)))
            if unwatch is None:
                raise offerings.unknown_resource(params.uri)
            self._session_watches[watch_key] = unwatch
            return types.EmptyResult()

    def session_ended(self, session_id: str) -> None:
        """A handshake-era session was deleted or forgotten: its resource watches end with it."""
        for watch_key in [k for k in self._session_watches if k[0] == session_id]:
            self._session_watches.pop(watch_key)()

    async def unsubscribe_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        with mcp_errors():
            caller = caller_of(ctx)
            unwatch = self._session_watches.pop((caller.session_id or str(id(ctx.session)), params.uri), None)
            if unwatch is not None:
                unwatch()
            return types.EmptyResult()

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        with mcp_errors():
            caller = caller_of(ctx)
            admitted, toolset = await self._admit_listing(caller)
        organisation_id = admitted.organisation.id
        await self.changes.baseline_offerings(organisation_id)
        # Resources the client names are watched on the organisation's own connections before
        # the stream is acknowledged; a URI that names none of its servers is honored and never fires.
        bus = self.changes.bus(organisation_id)
        unwatches = []
        try:
            for uri in params.notifications.resource_subscriptions or ():
                unwatch = await self._watch(
                    admitted.organisation, uri, lambda public: self._soon(bus.publish(ResourceUpdated(uri=public)))
                )
                if unwatch is not None:
                    unwatches.append(unwatch)
            with self.changes.listening(organisation_id, toolset):
                return await self.changes.listen_handler(organisation_id)(ctx, params)
        finally:
            for unwatch in unwatches:
                unwatch()
