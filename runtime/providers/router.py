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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from runtime.config import ModelConfig, Settings
from runtime.errors import (
    GatewayError,
    UpstreamError,
    invalid_request,
    upstream_throttled,
    upstream_unavailable,
)
from runtime.json_types import JSON
from runtime.providers.registry import (
    DEFAULT_MAX_TOOLS,
    Api,
    Provider,
    ProviderProfile,
    profile_for,
    provider_kind,
)
from runtime.providers.resilience import CircuitBreaker, call_with_retries, open_stream_with_retries
from runtime.providers.tool_schemas import body_for_dialect
from runtime.request import RouteLog
from runtime.telemetry import current as telemetry

log = logging.getLogger("plugway.router")


async def _cannot_embed(provider: Provider) -> JSON:
    raise UpstreamError(f"provider '{provider.id}' ({provider.kind}) has no embeddings", retryable=False)


class _Attempt:
    """One candidate of a model call's chain, tried under its provider's retry policy and breaker."""

    __slots__ = ("attempts", "candidate", "provider", "started")

    def __init__(self, attempts: _Attempts, candidate: ModelConfig, provider: Provider) -> None:
        self.attempts = attempts
        self.candidate = candidate
        self.provider = provider
        self.started = time.perf_counter()

    def policy(self) -> dict[str, Any]:
        """The keyword arguments of :func:`call_with_retries` / :func:`open_stream_with_retries`."""
        attempts = self.attempts
        config = attempts.router._configs.get(self.provider.id)
        return {
            "max_retries": max(0, min(config.max_retries if config else 0, attempts.left - 1)),
            "base_delay_s": attempts.router.base_delay_s,
            "on_retry": self.on_retry,
            "breaker": attempts.router.breaker(self.provider.id, attempts.route.organisation),
        }

    def on_retry(self, number: int, error: UpstreamError, delay: float) -> None:
        attempts, provider_id = self.attempts, self.provider.id
        attempts.left -= 1
        attempts.retried = True
        telemetry().upstream_retry(provider_id)
        attempts.route.attempts.append(
            {"provider": provider_id, "model": self.candidate.id, "error": error.message, "retry_in_s": round(delay, 3)}
        )
        log.warning("retry %d of %s via %s in %.2fs: %s", number, self.candidate.id, provider_id, delay, error.for_logs())


class _Attempts:
    """The one fallback policy of a model call, streamed or not: each candidate of the model's chain
    in turn (iterate), within ``routing.max_attempts_per_call`` across every retry and fallback;
    what each attempt ended with is told back here, and :meth:`give_up` says what the client gets
    when none succeeded."""

    __slots__ = ("chain", "failures", "left", "retried", "route", "router")

    def __init__(self, router: ModelRouter, model: ModelConfig, route: RouteLog) -> None:
        self.router = router
        self.route = route
        self.chain = router._chain(model)
        self.left = router.settings.routing.max_attempts_per_call
        self.retried = False
        self.failures: list[UpstreamError] = []

    def __iter__(self) -> Iterator[_Attempt]:
        for candidate in self.chain:
            if self.left <= 0:
                return
            provider = self.router._provider(candidate)
            self.left -= 1
            yield _Attempt(self, candidate, provider)

    def served(self, attempt: _Attempt) -> None:
        """``attempt`` answered (a streamed one: its first chunk is in hand)."""
        self.route.provider, self.route.model = attempt.provider.id, attempt.candidate.id

    def failed(self, attempt: _Attempt, error: UpstreamError) -> None:
        """``attempt`` failed before answering: the next candidate's turn, except that a request
        error goes back to the client at once (raised here as 400)."""
        telemetry().upstream_finished(attempt.provider.id, attempt.candidate.id, attempt.started, error)
        if error.client_error:
            raise invalid_request(error.message, param=error.param) from error
        self.route.attempts.append({"provider": attempt.provider.id, "model": attempt.candidate.id, "error": error.message})
        log.warning("model %s via %s failed: %s", attempt.candidate.id, attempt.provider.id, error.for_logs())
        self.failures.append(error)

    def give_up(self) -> GatewayError:
        """Every candidate failed: 429 when they all throttle, else 502."""
        failures = self.failures
        if failures and all(error.throttled for error in failures):
            hints = [error.retry_after for error in failures if error.retry_after is not None]
            return upstream_throttled(
                f"{failures[-1].message}: the model's providers are rate limiting. Try again later.",
                min(hints) if hints else None,
            )
        error = upstream_unavailable(failures[-1].message if failures else "no provider available")
        if self.retried or len(failures) > 1:
            # We already retried and failed over: a client retrying at once would only multiply the load.
            error.headers["x-should-retry"] = "false"
        return error


def _native(provider: Provider) -> Any:
    # Only adapters whose profile speaks an API natively have its methods; callers check speaks() first.
    return provider


def build_provider(config: Any) -> Provider:
    """The adapter for one configured provider, from its kind's registration (for the API it is called with)."""
    return provider_kind(config.kind).build(config, getattr(config, "api", None))


class ModelRouter:
    def __init__(self, settings: Settings, providers: dict[str, Provider], *, base_delay_s: float = 0.2) -> None:
        self.settings = settings
        self.providers = providers
        self.base_delay_s = base_delay_s
        self._models = {model.id: model for model in settings.models}
        self._configs = {p.id: p for p in settings.providers}
        # A model whose ``api`` differs from its provider's gets its own adapter for that API,
        # built on first use: (provider id, api) -> adapter.
        self._by_api: dict[tuple[str, str], Provider] = {}
        # A configured model's fallback chain and its profiles, read on every request: worked out once.
        self._chains: dict[str, tuple[ModelConfig, tuple[ModelConfig, ...], tuple[tuple[ModelConfig, ProviderProfile], ...]]] = {}
        # One breaker per provider and organisation: one tenant's traffic (its hanging streams, its
        # huge prompts) opens the provider's breaker for that tenant only, never for everyone.
        self._breakers: dict[tuple[str, str | None], CircuitBreaker] = {}

    def breaker(self, provider_id: str, organisation: str | None) -> CircuitBreaker | None:
        """The circuit breaker of ``provider_id`` for ``organisation`` (created on first use)."""
        breaker = self._breakers.get((provider_id, organisation))
        if breaker is None:
            config = self._configs.get(provider_id)
            if config is None:
                return None
            breaker = self._breakers[(provider_id, organisation)] = CircuitBreaker(
                failure_threshold=config.breaker_failures, cooldown_s=config.breaker_cooldown_s
            )
        return breaker

    @classmethod
    def from_settings(cls, settings: Settings, *, providers: Mapping[str, Provider] | None = None) -> ModelRouter:
        """Build every configured provider's adapter; ``providers`` hands in ready ones by id
        (a ``function`` provider's Python function is given in code, not in the configuration)."""
        given = dict(providers or {})
        unknown = set(given) - {p.id for p in settings.providers}
        if unknown:
            raise ValueError(f"providers given for ids the configuration does not have: {', '.join(sorted(unknown))}")
        return cls(settings, {p.id: given[p.id] if p.id in given else build_provider(p) for p in settings.providers})

    def model(self, model_id: str) -> ModelConfig | None:
        return self._models.get(model_id)

    def profile(self, model: ModelConfig) -> ProviderProfile:
        """What the provider serving ``model`` can do, with the model's own overrides."""
        config = self._configs[model.provider]
        return profile_for(config.kind, vision=model.vision, api=model.api or config.api, audio=model.audio)

    def _provider(self, model: ModelConfig) -> Provider:
        """The adapter serving ``model``: its provider's, or one for the API the model overrides it with."""
        config = self._configs.get(model.provider)
        if config is None or model.api is None or model.api == config.api:
            return self.providers[model.provider]
        adapter = self._by_api.get((model.provider, model.api))
        if adapter is None:
            adapter = self._by_api[(model.provider, model.api)] = provider_kind(config.kind).build(config, model.api)
        return adapter

    def _chain_profiles(self, model: ModelConfig) -> tuple[tuple[ModelConfig, ProviderProfile], ...]:
        return self._chain_and_profiles(model)[2]

    def tool_limit(self, model: ModelConfig) -> int:
        """Most tools one request may offer: the smallest limit along the model's fallback chain."""
        limits = [
            self._configs[candidate.provider].max_tools or profile.max_tools
            for candidate, profile in self._chain_profiles(model)
        ]
        return min(limits, default=DEFAULT_MAX_TOOLS)

    def tool_media(self, model: ModelConfig) -> frozenset[str]:
        """What of a tool result's media reaches the model: ``image`` (every model along the chain
        sees and its adapter carries tool images), ``audio`` (likewise, hears)."""
        profiles = [profile for _, profile in self._chain_profiles(model)]
        carried = [profile for profile in profiles if profile.tool_result_images]
        if len(carried) != len(profiles):
            return frozenset()
        media = set()
        if all(profile.vision for profile in carried):
            media.add("image")
        if all(profile.audio for profile in carried):
            media.add("audio")
        return frozenset(media)

    def supports_json_schema(self, model: ModelConfig) -> bool:
        """Whether every provider along the chain honours ``response_format`` json_schema."""
        return all(profile.json_schema_output for _, profile in self._chain_profiles(model))

    def speaks_natively(self, model: ModelConfig, api: Api) -> bool:
        """Whether every provider along the model's chain speaks ``api`` natively (a request in it goes as it is)."""
        return all(profile.speaks(api) for _, profile in self._chain_profiles(model))

    def ignored_chat_params(self, model: ModelConfig, body: JSON) -> list[str]:
        """The chat fields some provider along the chain cannot honour and drops (its adapter's
        ``ignored_chat_params``), for the door to name or refuse."""
        names: dict[str, None] = {}
        for candidate in self._chain(model):
            ignore = getattr(self.providers.get(candidate.provider), "ignored_chat_params", None)
            if callable(ignore):
                names.update(dict.fromkeys(ignore(self._upstream_body(candidate, body))))
        return list(names)

    def provider_kind(self, model: ModelConfig) -> str:
        """The kind of the provider serving ``model``, for messages to people (never to compare)."""
        return self._configs[model.provider].kind

    def can_embed(self, model: ModelConfig) -> bool:
        """Whether the provider serving ``model`` has an embeddings API."""
        return self.profile(model).embeddings

    def _chain(self, model: ModelConfig) -> tuple[ModelConfig, ...]:
        return self._chain_and_profiles(model)[1]

    def _chain_and_profiles(
        self, model: ModelConfig
    ) -> tuple[ModelConfig, tuple[ModelConfig, ...], tuple[tuple[ModelConfig, ProviderProfile], ...]]:
        """``model`` and its fallbacks in order, and the profile of each served by a configured provider."""
        known = self._chains.get(model.id)
        if known is not None and known[0] is model:
            return known
        chain = [model]
        for fallback_id in model.fallbacks:
            fallback = self._models.get(fallback_id)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        profiles = tuple((candidate, self.profile(candidate)) for candidate in chain if candidate.provider in self._configs)
        worked_out = (model, tuple(chain), profiles)
        if self._models.get(model.id) is model:
            self._chains[model.id] = worked_out
        return worked_out

    def _upstream_body(self, model: ModelConfig, body: JSON) -> JSON:
        upstream = dict(body_for_dialect(body, self.profile(model).tool_schema_drops))
        upstream["model"] = model.upstream
        if model.max_tokens_default and "max_tokens" not in upstream and "max_completion_tokens" not in upstream:
            upstream["max_tokens"] = model.max_tokens_default
        return upstream

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

    async def embeddings(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON:
        """One OpenAI-format embeddings call, with retries and fallbacks (a fallback that cannot embed fails over)."""
        route = route if route is not None else RouteLog()

        def call(provider: Provider, candidate: ModelConfig) -> Callable[[], Awaitable[JSON]]:
            if not self.can_embed(candidate):
                return functools.partial(_cannot_embed, provider)
            return functools.partial(_native(provider).embeddings, {**body, "model": candidate.upstream}, request_id=route.request_id)

        return await self._call(model, route, call)

    async def _call(
        self, model: ModelConfig, route: RouteLog, call: Callable[[Provider, ModelConfig], Callable[[], Awaitable[JSON]]]
    ) -> JSON:
        """A non-streamed call: one awaited call per attempt, under the fallback policy of :class:`_Attempts`."""
        attempts = _Attempts(self, model, route)
        for attempt in attempts:
            try:
                answer = await call_with_retries(call(attempt.provider, attempt.candidate), **attempt.policy())
            except UpstreamError as exc:
                attempts.failed(attempt, exc)
                continue
            attempts.served(attempt)
            telemetry().upstream_finished(attempt.provider.id, attempt.candidate.id, attempt.started, None)
            return answer
        raise attempts.give_up()

    async def _stream(
        self,
        model: ModelConfig,
        route: RouteLog,
        start: Callable[[Provider, ModelConfig], Callable[[], AsyncIterator[JSON]]],
    ) -> AsyncGenerator[JSON, None]:
        """A streamed call under the fallback policy of :class:`_Attempts`: each attempt retried (and its
        breaker consulted) until its first chunk; nothing is retried after it."""
        attempts = _Attempts(self, model, route)
        for attempt in attempts:
            provider, candidate = attempt.provider, attempt.candidate
            stream: AsyncGenerator[JSON, None] = open_stream_with_retries(start(provider, candidate), **attempt.policy())  # type: ignore[assignment]
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                attempts.failed(attempt, UpstreamError(f"provider '{provider.id}' sent an empty stream"))
                continue
            except UpstreamError as exc:
                await stream.aclose()
                attempts.failed(attempt, exc)
                continue
            attempts.served(attempt)
            telemetry().upstream_first_chunk(provider.id, candidate.id, attempt.started)
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
                telemetry().upstream_finished(provider.id, candidate.id, attempt.started, broke)
            return
        raise attempts.give_up()

    async def aclose(self) -> None:
        for provider in [*self.providers.values(), *self._by_api.values()]:
            await provider.aclose()
