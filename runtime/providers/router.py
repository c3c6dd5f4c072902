"""Model routing: from the client's model name to a provider call, resiliently.

The router is the only place that knows models map to providers. It rewrites
``model`` to the upstream name, retries each provider with backoff and jitter
(``max_retries``, honouring ``retry-after``), skips a provider whose circuit
breaker is open, tries the model's ``fallbacks`` in order, and turns the final
failure into ``502 upstream_unavailable`` (a request error from the provider
goes back to the client as 400). Streams retry and fail over only before their
first chunk reaches the caller.

Attempts are bounded per model call (``routing.max_attempts_per_call``, 4 by
default) across every retry and fallback. When every provider of the model
throttles (429), the client gets 429 ``rate_limit_exceeded`` with the
shortest ``Retry-After`` they sent; throttling never counts against a circuit
breaker. After retries or failovers a 502 carries ``x-should-retry: false``,
which the official OpenAI SDKs obey, so their own retries do not multiply ours.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime.config import ModelConfig, Settings
from runtime.errors import (
    GatewayError,
    UpstreamError,
    invalid_request,
    upstream_throttled,
    upstream_unavailable,
)
from runtime.providers.base import Provider
from runtime.providers.demo import DemoProvider
from runtime.providers.openai import OpenAIProvider
from runtime.providers.resilience import CircuitBreaker, call_with_retries, open_stream_with_retries
from runtime.request import RouteLog
from runtime.telemetry import current as telemetry

log = logging.getLogger("plugway.router")
# OpenAI refuses more than 128 tools ("array too long"); the other kinds are held to the same.
DEFAULT_TOOL_LIMIT = 128
TOOL_LIMITS: dict[str, int] = {"openai": 128, "anthropic": 128, "demo": 128}
# Provider kinds whose tool results can carry images to the model.
TOOL_IMAGE_KINDS = frozenset({"anthropic"})
JSON = dict[str, Any]
# Provider kinds that serve POST /v1/embeddings.
EMBEDDING_KINDS = frozenset({"openai", "demo"})


async def _cannot_embed(provider: Provider) -> JSON:
    raise UpstreamError(f"provider '{provider.id}' ({provider.kind}) has no embeddings", retryable=False)


@dataclass
class _Budget:
    """Attempts left for one model call, across retries and fallbacks."""

    left: int
    retried: bool = False

    def retries_for(self, configured: int) -> int:
        return max(0, min(configured, self.left - 1))


def _native(provider: Provider) -> Any:
    # Only AnthropicProvider has the native Messages methods; anthropic_native() checks the kind first.
    return provider


def build_provider(config: Any) -> Provider:
    if config.kind == "openai":
        return OpenAIProvider(config)
    if config.kind == "demo":
        return DemoProvider(config)
    if config.kind == "anthropic":
        from runtime.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    raise ValueError(f"unknown provider kind {config.kind}")


class ModelRouter:
    def __init__(self, settings: Settings, providers: dict[str, Provider], *, base_delay_s: float = 0.2) -> None:
        self.settings = settings
        self.providers = providers
        self.base_delay_s = base_delay_s
        self._models = {model.id: model for model in settings.models}
        self._configs = {p.id: p for p in settings.providers}
        self.breakers = {
            p.id: CircuitBreaker(failure_threshold=p.breaker_failures, cooldown_s=p.breaker_cooldown_s)
            for p in settings.providers
        }

    def _policy(self, provider_id: str, candidate: ModelConfig, route: RouteLog, budget: _Budget) -> JSON:
        config = self._configs.get(provider_id)

        def on_retry(number: int, error: UpstreamError, delay: float) -> None:
            budget.left -= 1
            budget.retried = True
            telemetry().upstream_retry(provider_id)
            route.attempts.append(
                {"provider": provider_id, "model": candidate.id, "error": error.message, "retry_in_s": round(delay, 3)}
            )
            log.warning("retry %d of %s via %s in %.2fs: %s", number, candidate.id, provider_id, delay, error.for_logs())

        return {
            "max_retries": budget.retries_for(config.max_retries if config else 0),
            "base_delay_s": self.base_delay_s,
            "on_retry": on_retry,
            "breaker": self.breakers.get(provider_id),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRouter:
        return cls(settings, {p.id: build_provider(p) for p in settings.providers})

    def model(self, model_id: str) -> ModelConfig | None:
        return self._models.get(model_id)

    def tool_limit(self, model: ModelConfig) -> int:
        """Most tools one request may offer: the smallest limit along the model's fallback chain."""
        limits = []
        for candidate in self._chain(model):
            config = self._configs.get(candidate.provider)
            if config is not None:
                limits.append(config.max_tools or TOOL_LIMITS.get(config.kind, DEFAULT_TOOL_LIMIT))
        return min(limits, default=DEFAULT_TOOL_LIMIT)

    def accepts_tool_images(self, model: ModelConfig) -> bool:
        """Whether every provider along the model's chain can show images in tool results."""
        return all(
            (config := self._configs.get(candidate.provider)) is not None and config.kind in TOOL_IMAGE_KINDS
            for candidate in self._chain(model)
        )

    def _chain(self, model: ModelConfig) -> list[ModelConfig]:
        chain = [model]
        for fallback_id in model.fallbacks:
            fallback = self._models.get(fallback_id)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        return chain

    def _upstream_body(self, model: ModelConfig, body: JSON) -> JSON:
        upstream = dict(body)
        upstream["model"] = model.upstream
        if model.max_tokens_default and "max_tokens" not in upstream and "max_completion_tokens" not in upstream:
            upstream["max_tokens"] = model.max_tokens_default
        return upstream

    @staticmethod
    def _client_error(error: UpstreamError) -> GatewayError:
        return invalid_request(error.message, param=error.param)

    def _give_up(self, failures: list[UpstreamError], budget: _Budget) -> GatewayError:
        """Every candidate failed: 429 when they all throttle, else 502."""
        if failures and all(error.throttled for error in failures):
            hints = [error.retry_after for error in failures if error.retry_after is not None]
            return upstream_throttled(
                f"{failures[-1].message}: the model's providers are rate limiting. Try again later.",
                min(hints) if hints else None,
            )
        error = upstream_unavailable(failures[-1].message if failures else "no provider available")
        if budget.retried or len(failures) > 1:
            # We already retried and failed over: a client retrying at once would only multiply the load.
            error.headers["x-should-retry"] = "false"
        return error

    def _failed(self, route: RouteLog, provider_id: str, candidate: ModelConfig, error: UpstreamError) -> None:
        route.attempts.append({"provider": provider_id, "model": candidate.id, "error": error.message})
        log.warning("model %s via %s failed: %s", candidate.id, provider_id, error.for_logs())

    async def chat(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON:
        """One OpenAI-format completion, with retries and fallbacks."""
        route = route if route is not None else RouteLog()

        def call(provider: Provider, candidate: ModelConfig) -> Callable[[], Awaitable[JSON]]:
            return functools.partial(provider.chat, self._upstream_body(candidate, body), request_id=route.request_id)

        return await self._call(model, route, call)

    def stream(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> AsyncIterator[JSON]:
        """One OpenAI-format streamed completion: retries and fallbacks until its first chunk."""
        route = route if route is not None else RouteLog()

        def start(provider: Provider, candidate: ModelConfig) -> Callable[[], AsyncIterator[JSON]]:
            return functools.partial(provider.stream_chat, self._upstream_body(candidate, body), request_id=route.request_id)

        return self._stream(model, route, start)

    def supports_json_schema(self, model: ModelConfig) -> bool:
        """Whether every provider along the chain honours ``response_format`` json_schema."""
        return all(
            (config := self._configs.get(candidate.provider)) is not None and config.kind in ("openai", "demo")
            for candidate in self._chain(model)
        )

    def anthropic_native(self, model: ModelConfig) -> bool:
        """Whether every provider along the model's chain speaks Anthropic's Messages API."""
        return all(
            (config := self._configs.get(candidate.provider)) is not None and config.kind == "anthropic"
            for candidate in self._chain(model)
        )

    async def messages(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON:
        """An Anthropic Messages request sent as it is (model renamed), for an all-Anthropic chain."""
        route = route if route is not None else RouteLog()

        def call(provider: Provider, candidate: ModelConfig) -> Callable[[], Awaitable[JSON]]:
            return functools.partial(_native(provider).messages, {**body, "model": candidate.upstream}, request_id=route.request_id)

        return await self._call(model, route, call)

    def stream_messages(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> AsyncIterator[JSON]:
        """Anthropic stream events, as they come, for an all-Anthropic chain."""
        route = route if route is not None else RouteLog()

        def start(provider: Provider, candidate: ModelConfig) -> Callable[[], AsyncIterator[JSON]]:
            return functools.partial(_native(provider).stream_messages, {**body, "model": candidate.upstream}, request_id=route.request_id)

        return self._stream(model, route, start)

    def embedding_kind(self, model: ModelConfig) -> str | None:
        """The provider kind serving ``model`` if that kind cannot embed (anthropic), else None."""
        config = self._configs.get(model.provider)
        kind = config.kind if config is not None else None
        return None if kind in EMBEDDING_KINDS else kind

    async def embeddings(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON:
        """One OpenAI-format embeddings call, with retries and fallbacks (a fallback that cannot embed fails over)."""
        route = route if route is not None else RouteLog()

        def call(provider: Provider, candidate: ModelConfig) -> Callable[[], Awaitable[JSON]]:
            embed = getattr(provider, "embeddings", None)
            if embed is None:
                return functools.partial(_cannot_embed, provider)
            return functools.partial(embed, {**body, "model": candidate.upstream}, request_id=route.request_id)

        return await self._call(model, route, call)

    async def _call(
        self, model: ModelConfig, route: RouteLog, call: Callable[[Provider, ModelConfig], Callable[[], Awaitable[JSON]]]
    ) -> JSON:
        budget = _Budget(self.settings.routing.max_attempts_per_call)
        failures: list[UpstreamError] = []
        for candidate in self._chain(model):
            if budget.left <= 0:
                break
            provider = self.providers[candidate.provider]
            budget.left -= 1
            started = time.perf_counter()
            try:
                response = await call_with_retries(call(provider, candidate), **self._policy(provider.id, candidate, route, budget))
            except UpstreamError as exc:
                telemetry().upstream_finished(provider.id, candidate.id, started, exc)
                if exc.client_error:
                    raise self._client_error(exc) from exc
                self._failed(route, provider.id, candidate, exc)
                failures.append(exc)
                continue
            telemetry().upstream_finished(provider.id, candidate.id, started, None)
            route.provider, route.model = provider.id, candidate.id
            return response
        raise self._give_up(failures, budget)

    async def _stream(
        self, model: ModelConfig, route: RouteLog, start: Callable[[Provider, ModelConfig], Callable[[], AsyncIterator[JSON]]]
    ) -> AsyncIterator[JSON]:
        budget = _Budget(self.settings.routing.max_attempts_per_call)
        failures: list[UpstreamError] = []
        for candidate in self._chain(model):
            if budget.left <= 0:
                break
            provider = self.providers[candidate.provider]
            budget.left -= 1
            started = time.perf_counter()
            stream: AsyncGenerator[JSON, None] = open_stream_with_retries(start(provider, candidate), **self._policy(provider.id, candidate, route, budget))  # type: ignore[assignment]
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                empty = UpstreamError(f"provider '{provider.id}' sent an empty stream")
                telemetry().upstream_finished(provider.id, candidate.id, started, empty)
                self._failed(route, provider.id, candidate, empty)
                failures.append(empty)
                continue
            except UpstreamError as exc:
                await stream.aclose()
                telemetry().upstream_finished(provider.id, candidate.id, started, exc)
                if exc.client_error:
                    raise self._client_error(exc) from exc
                self._failed(route, provider.id, candidate, exc)
                failures.append(exc)
                continue
            route.provider, route.model = provider.id, candidate.id
            telemetry().upstream_first_chunk(provider.id, candidate.id, started)
            broke: UpstreamError | None = None
            try:
                yield first
                async for chunk in stream:
                    yield chunk
            except UpstreamError as exc:
                broke = exc
                raise
            finally:
                await stream.aclose()
                telemetry().upstream_finished(provider.id, candidate.id, started, broke)
            return
        raise self._give_up(failures, budget)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
