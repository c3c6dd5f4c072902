"""The gateway's services, shared by the HTTP app and the WhatsApp worker.

``Gateway.create`` opens every resource (database, provider clients, plugins,
MCP connections, the usage writer); ``aclose`` closes them. Nothing happens at
import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine

from runtime.billing import BudgetGuard
from runtime.config import ConfigError, ModelConfig, OrganisationConfig, Settings
from runtime.errors import GatewayError, UpstreamError, model_not_found
from runtime.limits import Limiter, LimiterUnavailable, create_limiter
from runtime.orchestration.loop import Comment, Orchestrator, RunResult, RunState, StreamEvent
from runtime.orchestration.tools import ToolCatalog
from runtime.plugin_host.manager import PluginHost, load_plugins
from runtime.providers.router import ModelRouter
from runtime.storage.db import make_engine
from runtime.storage.keys import KeyCache, sync_organisations
from runtime.storage.migrations import upgrade as upgrade_schema
from runtime.storage.usage import UsageWriter, cost_usd

log = logging.getLogger("plugway")
JSON = dict[str, Any]
# How long an abandoned stream keeps reading the upstream to learn what it really consumed.
ABANDONED_STREAM_DRAIN_S = 30.0
_END = object()


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
        self.orchestrator = Orchestrator(router=router, catalog=self.catalog, config=settings.orchestration)
        self.keys = KeyCache(engine, ttl_s=settings.key_cache_ttl_s)
        self.usage = UsageWriter(
            engine, flush_interval_s=settings.usage.flush_interval_s, max_batch=settings.usage.max_batch
        )
        self.limiter: Limiter = create_limiter(settings.redis_url, timeout_s=settings.limits.redis_timeout_s)
        self.budget = BudgetGuard(engine, self.usage)
        self._organisations = {org.id: org for org in settings.organisations}
        self._background: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(cls, settings: Settings, *, plugins: PluginHost | None = None) -> Gateway:
        plugins = plugins or load_plugins()
        check_plugins(settings, plugins)
        engine = make_engine(settings.database_url)
        # Alembic, under a lock: several processes may start at once on one database.
        await anyio.to_thread.run_sync(upgrade_schema, engine)
        await anyio.to_thread.run_sync(sync_organisations, engine, [o.id for o in settings.organisations])
        mcp = None
        mcp_refs = [ref for org in settings.organisations for ref in org.plugins if ref.mcp is not None]
        if mcp_refs:
            from runtime.mcp import McpManager

            mcp = McpManager(max_result_chars=settings.orchestration.max_tool_result_chars)
            await mcp.start(mcp_refs)
        gateway = cls(
            settings=settings, engine=engine, plugins=plugins, router=ModelRouter.from_settings(settings), mcp=mcp
        )
        gateway.usage.start()
        return gateway

    async def aclose(self) -> None:
        # Abandoned streams still draining their upstream: stop them; their usage is recorded as estimated.
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.limiter.aclose()
        await self.usage.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()
        await self.router.aclose()
        self.engine.dispose()

    # -- lookups ----------------------------------------------------------------------

    def organisation(self, org_id: str) -> OrganisationConfig | None:
        return self._organisations.get(org_id)

    def models_for(self, organisation: OrganisationConfig) -> list[ModelConfig]:
        if organisation.models is None:
            return list(self.settings.models)
        allowed = set(organisation.models)
        return [m for m in self.settings.models if m.id in allowed]

    def resolve_model(self, organisation: OrganisationConfig, model_id: str) -> ModelConfig:
        model = self.router.model(model_id)
        if model is None or (organisation.models is not None and model_id not in organisation.models):
            raise model_not_found(model_id)
        return model

    # -- running requests -------------------------------------------------------------

    async def complete(
        self,
        *,
        organisation_id: str,
        model: str,
        messages: list[JSON] | None = None,
        plugin_ids: Sequence[str] | None,
        request_id: str,
        key_id: str | None = None,
        source: str = "api",
        body: JSON | None = None,
        track_tokens: bool = False,
    ) -> RunResult:
        """Run one non-streamed request through the orchestration runtime and record its usage."""
        organisation = self._require_org(organisation_id)
        model_config = self.resolve_model(organisation, model)
        # Every source (the API, the WhatsApp worker) spends the same budget.
        await self.budget.check(organisation)
        body = dict(body) if body is not None else {}
        if messages is not None:
            body["messages"] = messages
        state = RunState(request_id=request_id, model=model_config.id)
        started = time.perf_counter()
        status = "error"
        try:
            result = await self.orchestrator.complete(
                organisation=organisation,
                model=model_config,
                body=body,
                plugin_ids=plugin_ids,
                request_id=request_id,
                state=state,
            )
            status = "ok"
            return result
        except GatewayError as exc:
            status = exc.code
            raise
        finally:
            self.record_usage(state, organisation_id, key_id, model_config, started, status, source, track_tokens)

    async def stream(
        self,
        *,
        organisation_id: str,
        model: str,
        body: JSON,
        plugin_ids: Sequence[str] | None,
        request_id: str,
        key_id: str | None = None,
        source: str = "api",
        track_tokens: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one request; usage is recorded when the stream ends, fails or is abandoned."""
        organisation = self._require_org(organisation_id)
        model_config = self.resolve_model(organisation, model)
        # Every source (the API, the WhatsApp worker) spends the same budget.
        await self.budget.check(organisation)
        return self._stream(organisation, model_config, body, plugin_ids, request_id, key_id, source, track_tokens)

    async def _stream(
        self,
        organisation: OrganisationConfig,
        model: ModelConfig,
        body: JSON,
        plugin_ids: Sequence[str] | None,
        request_id: str,
        key_id: str | None,
        source: str,
        track_tokens: bool,
    ) -> AsyncIterator[StreamEvent]:
        """Hand the client the events of a run that lives in its own task.

        If the client goes away, the run keeps reading the current upstream
        round (up to ``ABANDONED_STREAM_DRAIN_S``) so that the provider's real
        usage chunk is what gets billed, not an estimate; it starts no new
        round and runs no more tools.
        """
        state = RunState(request_id=request_id, model=model.id)
        events = self.orchestrator.stream(
            organisation=organisation,
            model=model,
            body=body,
            plugin_ids=plugin_ids,
            request_id=request_id,
            state=state,
        )
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)
        client_gone = asyncio.Event()
        started = time.perf_counter()

        async def run() -> None:
            status = "abandoned"
            tool_stage = False  # the last real event said tools are running: the round's usage is in
            tokens_when_gone: int | None = None
            deadline = 0.0
            loop = asyncio.get_running_loop()
            try:
                while True:
                    if client_gone.is_set():
                        if tokens_when_gone is None:
                            tokens_when_gone = state.usage["total_tokens"]
                            deadline = loop.time() + ABANDONED_STREAM_DRAIN_S
                        if tool_stage or state.usage["total_tokens"] > tokens_when_gone:
                            break
                        try:
                            event = await asyncio.wait_for(anext(events), deadline - loop.time())
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
                    if isinstance(event, Comment):
                        tool_stage = tool_stage if event.text == "keep-alive" else True
                    else:
                        tool_stage = False
            except GatewayError as exc:
                status = exc.code
                if not client_gone.is_set():
                    await queue.put(exc)
            except UpstreamError as exc:
                status = "upstream_error"
                if not client_gone.is_set():
                    await queue.put(exc)
            except Exception as exc:
                status = "error"
                if not client_gone.is_set():
                    await queue.put(exc)
            finally:
                try:
                    await events.aclose()
                finally:
                    self.record_usage(state, organisation.id, key_id, model, started, status, source, track_tokens)
            if not client_gone.is_set():
                await queue.put(_END)

        task = asyncio.get_running_loop().create_task(run(), name=f"plugway-stream-{request_id}")
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
                    # SSE keep-alives whenever the run is quiet: a slow model, tools running.
                    async with asyncio.timeout(keepalive_s):
                        item = await queue.get()
                except TimeoutError:
                    yield Comment("keep-alive")
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
                while not queue.empty():  # unblock a run waiting to hand over an event
                    queue.get_nowait()

    def _require_org(self, organisation_id: str) -> OrganisationConfig:
        organisation = self.organisation(organisation_id)
        if organisation is None:
            raise GatewayError(403, f"organisation '{organisation_id}' is not configured", code="organisation_not_configured", type="permission_error")
        return organisation

    def record_usage(
        self,
        state: RunState,
        organisation_id: str,
        key_id: str | None,
        model: ModelConfig,
        started: float,
        status: str,
        source: str,
        track_tokens: bool = False,
    ) -> None:
        usage = state.usage
        if state.unbilled_chars:
            # The upstream's usage chunk never arrived: count what was streamed (about 4 characters a token).
            estimate = max(1, state.unbilled_chars // 4)
            usage["completion_tokens"] += estimate
            usage["total_tokens"] += estimate
        served = self.router.model(state.route.model) if state.route.model else model
        cost = cost_usd((served or model).price, usage["prompt_tokens"], usage["completion_tokens"])
        self.budget.note(organisation_id, cost)
        self.usage.record(
            request_id=state.request_id,
            organisation_id=organisation_id,
            key_id=key_id,
            source=source,
            model=model.id,
            provider=state.route.provider,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            total_tokens=usage["total_tokens"],
            cost_usd=cost,
            rounds=state.rounds,
            tool_calls=len(state.tool_calls),
            latency_ms=(time.perf_counter() - started) * 1000,
            status=status,
        )
        if track_tokens and key_id and usage["total_tokens"]:
            task = asyncio.get_running_loop().create_task(self._count_tokens(key_id, usage["total_tokens"]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _count_tokens(self, key_id: str, tokens: int) -> None:
        try:
            await self.limiter.record_tokens(key_id, tokens)
        except LimiterUnavailable:
            # The usage record is still written; the daily counter misses these tokens.
            log.error("could not count %d tokens for key %s: rate limiter unavailable", tokens, key_id)
