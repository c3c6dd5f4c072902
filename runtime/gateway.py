"""The gateway's services, shared by the HTTP app and the WhatsApp worker.

``Gateway.create`` opens every resource (database, provider clients, plugins,
MCP connections, the usage writer); ``aclose`` closes them. Nothing happens at
import time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine

from runtime.accounting import Ledger
from runtime.admission import admit
from runtime.billing import BUDGET_CACHE_TTL_S, BUDGET_WRITE_MARGIN_S, BudgetGuard
from runtime.config import ConfigError, ModelConfig, OrganisationConfig, Settings
from runtime.errors import GatewayError, UpstreamError, model_not_found
from runtime.guardrails import Finding, Guardrails, hit_rows, record_hits
from runtime.json_types import JSON
from runtime.limits import Limiter, create_limiter
from runtime.orchestration.events import Event
from runtime.orchestration.loop import Orchestrator
from runtime.orchestration.sampling import ModelSampling
from runtime.orchestration.tools import ToolCatalog
from runtime.plugin_host.isolation import default_isolation, shutdown_isolation
from runtime.plugin_host.manager import PluginHost, load_plugins
from runtime.providers.registry import Provider
from runtime.providers.router import ModelRouter
from runtime.request import (
    KEEP_ALIVE,
    REQUESTED_MODEL,
    DoorRules,
    KeepAlive,
    PluginRequest,
    RequestContext,
    RunRequest,
    RunResult,
    RunState,
    ToolsContext,
)
from runtime.storage.db import DatabaseUnavailable, open_database
from runtime.storage.keys import KeyCache, sync_organisations
from runtime.storage.usage import UsageWriter
from runtime.telemetry import Telemetry, install, uninstall

log = logging.getLogger("plugway")
T = TypeVar("T")
# How long an abandoned stream keeps reading the upstream to learn what it really consumed.
ABANDONED_STREAM_DRAIN_S = 30.0
_END = object()


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def alias_target(aliases: dict[str, str], name: str) -> str | None:
    """The model id ``name`` is an alias of: an exact name first, then the first glob pattern that matches."""
    if name in aliases:
        return aliases[name]
    for pattern, target in aliases.items():
        if _is_pattern(pattern) and fnmatch.fnmatchcase(name, pattern):
            return target
    return None


def requested_model(ctx: RequestContext) -> str:
    """The model name the client sent (an alias perhaps): what answers name as their ``model``."""
    return str(ctx.extra.get(REQUESTED_MODEL) or ctx.model.id)


def check_plugins(settings: Settings, plugins: PluginHost) -> None:
    """Stop start-up on a plugin id that is not installed or a plugin config it refuses."""
    for i, org in enumerate(settings.organisations):
        for j, ref in enumerate(org.plugins):
            if ref.mcp is not None:
                continue
            if ref.id not in plugins.plugins:
                why = f" (it failed to load: {plugins.failures[ref.id]})" if ref.id in plugins.failures else ""
                raise ConfigError(f"organisations[{i}].plugins[{j}].id: plugin '{ref.id}' is not installed{why}")
            problems = plugins.config_errors(ref.id, ref.config)
            if problems:
                raise ConfigError(f"organisations[{i}].plugins[{j}].config: {'; '.join(problems)}")


class Accounting:
    """:meth:`Gateway.accounting`: a plain context manager rather than a generator-based one,
    as every request enters one."""

    __slots__ = ("ctx", "gateway", "started", "state")

    def __init__(self, gateway: Gateway, ctx: RequestContext, state: RunState) -> None:
        self.gateway, self.ctx, self.state = gateway, ctx, state
        self.started = time.perf_counter()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> bool:
        if kind is None:
            status = "ok"
        elif isinstance(error, GatewayError):
            status = error.code
        elif isinstance(error, UpstreamError):
            status = "upstream_error"
        elif isinstance(error, asyncio.CancelledError):
            status = "abandoned"
        else:
            status = "error"
        self.gateway.record_usage_safely(self.ctx, self.state, self.started, status)
        return False


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        plugins: PluginHost,
        router: ModelRouter,
        mcp: Any | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.plugins = plugins
        self.router = router
        self.mcp = mcp
        self.catalog = ToolCatalog(plugins, mcp)
        self.orchestrator = Orchestrator(
            router=router, catalog=self.catalog, config=settings.orchestration, sampling=ModelSampling(self, settings.orchestration.sampling)
        )
        self.keys = KeyCache(engine, ttl_s=settings.key_cache_ttl_s)
        self.usage = UsageWriter(
            engine,
            flush_interval_s=settings.usage.flush_interval_s,
            max_batch=settings.usage.max_batch,
            spill_path=Path(settings.usage.spill_file) if settings.usage.spill_file else None,
        )
        self.limiter: Limiter = create_limiter(
            settings.redis_url,
            timeout_s=settings.limits.redis_timeout_s,
            reservation_ttl_s=settings.limits.reservation_ttl_s,
            # billing: a settled cost counts in Redis until every process's database figure shows it.
            budget_visibility_s=settings.usage.flush_interval_s + BUDGET_CACHE_TTL_S + BUDGET_WRITE_MARGIN_S,
        )
        self.budget = BudgetGuard(engine, self.usage, hold_ttl_s=settings.limits.reservation_ttl_s)
        self.ledger = Ledger(usage=self.usage, budget=self.budget, limiter=self.limiter)
        self.telemetry: Telemetry = install(settings)
        self._organisations = {org.id: org for org in settings.organisations}
        self._guardrails: dict[tuple[str, tuple[str, ...]], Guardrails] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(
        cls, settings: Settings, *, plugins: PluginHost | None = None, providers: Mapping[str, Provider] | None = None
    ) -> Gateway:
        """Open every resource; ``providers`` hands in ready adapters by provider id (a ``function`` provider)."""
        plugins = plugins or load_plugins()
        router = ModelRouter.from_settings(settings, providers=providers)
        check_plugins(settings, plugins)
        # Alembic, under a lock: several processes may start at once on one database.
        try:
            engine = await anyio.to_thread.run_sync(open_database, settings.database_url)
        except DatabaseUnavailable as exc:
            raise ConfigError(str(exc)) from None
        assert engine is not None
        await anyio.to_thread.run_sync(sync_organisations, engine, [o.id for o in settings.organisations])
        mcp = None
        mcp_plugins = [(org.id, ref) for org in settings.organisations for ref in org.plugins if ref.mcp is not None]
        if mcp_plugins:
            from runtime.mcp import McpManager

            upstream_auth = None
            if any(ref.mcp is not None and ref.mcp.auth is not None for _org, ref in mcp_plugins):
                from runtime.mcp.oauth import UpstreamAuth

                upstream_auth = UpstreamAuth(settings, engine)
            mcp = McpManager(max_result_chars=settings.orchestration.max_tool_result_chars, upstream_auth=upstream_auth)
            await mcp.start(mcp_plugins)
        # Workers for CPU-bound tool work start now, so that no tool call waits for them.
        await anyio.to_thread.run_sync(default_isolation().start)
        gateway = cls(
            settings=settings, engine=engine, plugins=plugins, router=router, mcp=mcp
        )
        gateway.usage.start()
        gateway.telemetry.start(gateway)
        return gateway

    async def aclose(self) -> None:
        """Close every resource, each one even if another fails to close."""
        # Abandoned streams still draining their upstream: stop them; their usage is recorded as estimated.
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)
        pending = [*self._background, *self.ledger.background]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        closers: list[tuple[str, Any]] = [
            ("telemetry", self.telemetry.aclose),
            ("rate limiter", self.limiter.aclose),
            ("usage writer", self.usage.aclose),
            ("MCP connections", self.mcp.aclose if self.mcp is not None else None),
            ("provider clients", self.router.aclose),
            ("code-mode sandbox", self.orchestrator.aclose),
            ("tool worker processes", partial(anyio.to_thread.run_sync, shutdown_isolation)),
        ]
        for name, close in closers:
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("closing the %s failed; closing the rest", name)
        try:
            self.engine.dispose()
        except Exception:
            log.exception("closing the database engine failed")
        uninstall(self.telemetry)

    # -- lookups ----------------------------------------------------------------------

    def organisation(self, org_id: str) -> OrganisationConfig | None:
        return self._organisations.get(org_id)

    def models_for(self, organisation: OrganisationConfig) -> list[ModelConfig]:
        if organisation.models is None:
            return list(self.settings.models)
        allowed = set(organisation.models)
        return [m for m in self.settings.models if m.id in allowed]

    def guardrails_for(self, organisation: OrganisationConfig, keys: Sequence[str]) -> Guardrails | None:
        """The organisation's guardrails named by ``keys``, compiled once and shared; None for none."""
        if not keys:
            return None
        cache_key = (organisation.id, tuple(keys))
        guardrails = self._guardrails.get(cache_key)
        if guardrails is None:
            guardrails = self._guardrails[cache_key] = Guardrails.from_config(organisation.guardrails, keys)
        return guardrails

    def record_guardrail_hits(
        self, hits: list[tuple[str, list[Finding]]], *, organisation_id: str, endpoint: str | None, key_id: str | None, request_id: str
    ) -> None:
        """Store what the guardrails found (never the content), off the event loop."""
        rows = [
            row
            for stage, findings in hits
            for row in hit_rows(findings, organisation_id=organisation_id, stage=stage, endpoint=endpoint, key_id=key_id, request_id=request_id)
        ]
        if not rows:
            return

        async def write() -> None:
            try:
                await anyio.to_thread.run_sync(record_hits, self.engine, rows)
            except Exception:
                log.exception("recording %d guardrail hits failed", len(rows))

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def configured_model(self, model_id: str) -> ModelConfig | None:
        return self.router.model(model_id)

    def resolve_model(self, organisation: OrganisationConfig, model_id: str) -> ModelConfig:
        """The configured model a client's name means: a model id, else an alias (the organisation's first)."""
        model = self.router.model(model_id)
        if model is None:
            target = alias_target(organisation.model_aliases, model_id) or alias_target(self.settings.model_aliases, model_id)
            model = self.router.model(target) if target is not None else None
        if model is None or (organisation.models is not None and model.id not in organisation.models):
            raise model_not_found(model_id)
        return model

    def model_aliases_for(self, organisation: OrganisationConfig) -> dict[str, str]:
        """The plain-name aliases (not patterns) this organisation's clients may send, name -> model id."""
        merged = {**self.settings.model_aliases, **organisation.model_aliases}
        return {
            name: target
            for name, target in merged.items()
            if not _is_pattern(name) and self.router.model(name) is None
            and (organisation.models is None or target in organisation.models)
        }

    # -- running requests -------------------------------------------------------------

    async def admit(self, door: DoorRules, **kwargs: Any) -> RequestContext:
        """Admit a request through ``door`` (see :func:`runtime.admission.admit`); an alias the client sent is kept."""
        ctx = await admit(self, door, **kwargs)
        if kwargs["model"] != ctx.model.id:
            ctx.extra[REQUESTED_MODEL] = kwargs["model"]
        return ctx

    async def run(self, ctx: RequestContext, request: RunRequest) -> RunResult:
        """Run a request to its end in this task and fold its events; usage is recorded however it ends.

        Cancelling the caller (the client went away) cancels the run at once,
        tool calls included; what already ran is still recorded.
        """
        state = RunState(request_id=ctx.request_id, model=ctx.model.id, organisation=ctx.organisation.id)
        events: list[Event] = []
        async with self.accounting(ctx, state):
            async for event in self.orchestrator.run(ctx, request, state):
                events.append(event)
        return RunResult(events, state)

    def accounting(self, ctx: RequestContext, state: RunState) -> Accounting:
        """Record the usage of the work done inside (``async with``), with the status it ended with."""
        return Accounting(self, ctx, state)

    async def complete(
        self,
        *,
        organisation_id: str,
        model: str,
        messages: list[JSON],
        plugin_ids: Sequence[str] | None,
        request_id: str,
        source: str = "api",
        end_user: str | None = None,
    ) -> RunResult:
        """Admit and run a request made by the gateway itself (the WhatsApp worker): no key, the organisation's budget."""
        ctx = await self.admit(
            DoorRules(source),
            key=None,
            organisation_id=organisation_id,
            request_id=request_id,
            model=model,
            plugins=None if plugin_ids is None else [PluginRequest(p, "enabled_plugin_ids") for p in plugin_ids],
            body={"messages": messages},
        )
        ctx.end_user = end_user
        return await self.run(ctx, RunRequest({"model": model, "messages": messages}))

    def stream(self, ctx: RequestContext, request: RunRequest) -> AsyncIterator[Event | KeepAlive]:
        """The events of a run that lives in its own task, with keep-alives whenever it is quiet.

        Usage is recorded when the run ends, fails or is abandoned. If the client
        goes away during an upstream round, the run keeps reading that round (up
        to ``ABANDONED_STREAM_DRAIN_S``) so that the provider's real usage is what
        gets billed, not an estimate; it starts no new round and runs no more
        tools. If it goes away while tools run, they are cancelled at once.
        """
        state = RunState(request_id=ctx.request_id, model=ctx.model.id, organisation=ctx.organisation.id)
        return self.stream_events(ctx, state, self.orchestrator.run(ctx, request, state))

    async def stream_events(
        self, ctx: RequestContext, state: RunState, events: AsyncGenerator[T, None]
    ) -> AsyncIterator[T | KeepAlive]:
        """Hand a client the events of work running in its own task (see :meth:`stream`).

        ``state`` must track the work: its usage, and its ``phase`` ("model" while
        an upstream round streams).
        """
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)
        client_gone = asyncio.Event()
        started = time.perf_counter()

        async def run() -> None:
            status = "abandoned"
            tokens_when_gone: int | None = None
            deadline = 0.0
            loop = asyncio.get_running_loop()
            try:
                while True:
                    if client_gone.is_set():
                        if tokens_when_gone is None:
                            tokens_when_gone = state.usage["total_tokens"]
                            deadline = loop.time() + ABANDONED_STREAM_DRAIN_S
                        if state.phase != "model" or state.usage["total_tokens"] > tokens_when_gone:
                            break
                        try:
                            await asyncio.wait_for(anext(events), deadline - loop.time())
                        except (StopAsyncIteration, TimeoutError):
                            break
                    else:
                        try:
                            event = await anext(events)
                        except StopAsyncIteration:
                            status = "ok" if not client_gone.is_set() else status
                            break
                        if not client_gone.is_set():
                            await queue.put(event)
            except GatewayError as exc:
                status = exc.code
                if not client_gone.is_set():
                    await queue.put(exc)
            except UpstreamError as exc:
                status = "upstream_error"
                if not client_gone.is_set():
                    await queue.put(exc)
            except asyncio.CancelledError:
                # The client went away while tools ran, or the gateway is shutting down.
                pass
            except Exception as exc:
                status = "error"
                log.exception("run %s failed", ctx.request_id)
                if not client_gone.is_set():
                    await queue.put(exc)
            finally:
                try:
                    await events.aclose()
                finally:
                    # The client's stream ends properly (its final chunk, [DONE], the door's
                    # terminal event) even if recording fails.
                    self.record_usage_safely(ctx, state, started, status)
            if not client_gone.is_set():
                await queue.put(_END)

        task = asyncio.get_running_loop().create_task(run(), name=f"plugway-stream-{ctx.request_id}")
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

        def release_client(done: asyncio.Task[None]) -> None:
            # Cancelled at shutdown: end the client's stream instead of leaving it waiting.
            if done.cancelled() and not client_gone.is_set() and not queue.full():
                queue.put_nowait(_END)

        task.add_done_callback(release_client)
        finished = False
        keepalive_s = self.settings.orchestration.keepalive_s
        try:
            while True:
                try:
                    # Keep-alives whenever the run is quiet: a slow model, tools running.
                    async with asyncio.timeout(keepalive_s):
                        item = await queue.get()
                except TimeoutError:
                    yield KEEP_ALIVE
                    continue
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                client_gone.set()
                if state.phase != "model":
                    # Nothing to bill is in flight: stop tools (and the run) now.
                    task.cancel()
                while not queue.empty():  # unblock a run waiting to hand over an event
                    queue.get_nowait()

    def record_usage(self, ctx: RequestContext, state: RunState, started: float, status: str) -> None:
        """Record a run or single upstream call through the one accounting path (:class:`~runtime.accounting.Ledger`)."""
        if state.guardrail_hits:
            self.record_guardrail_hits(
                state.guardrail_hits, organisation_id=ctx.organisation.id, endpoint=ctx.endpoint, key_id=ctx.key_id, request_id=ctx.request_id
            )
        served = self.router.model(state.route.model) if state.route.model else None
        self.ledger.record_run(ctx, state, price=(served or ctx.model).price, started=started, status=status)

    def record_usage_safely(self, ctx: RequestContext, state: RunState, started: float, status: str) -> None:
        """:meth:`record_usage`, logged rather than raised: a request whose work is done is never
        failed (or a stream left unended) by its own bookkeeping; its holds lapse after
        ``limits.reservation_ttl_s`` if they could not be settled."""
        try:
            self.record_usage(ctx, state, started, status)
        except Exception:
            log.exception("could not record the usage of request %s (status %s)", ctx.request_id, status)

    def record_tool_call(self, ctx: ToolsContext, tool: str, *, started: float, status: str) -> None:
        """Record a tool called on its own (``/mcp``, the console) through the same path."""
        self.ledger.record_tool_call(ctx, tool, started=started, status=status)
