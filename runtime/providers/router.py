"""Model routing: from the client's model name to a provider call, with fallbacks.

The router is the only place that knows models map to providers. It rewrites
``model`` to the upstream name, tries the model's ``fallbacks`` in order when a
provider fails, and turns the final failure into ``502 upstream_unavailable``
(or passes a request error from the provider back to the client as 400).
Streams fail over only before their first chunk reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from runtime.config import ModelConfig, Settings
from runtime.errors import GatewayError, UpstreamError, invalid_request, upstream_unavailable
from runtime.providers.base import Provider
from runtime.providers.demo import DemoProvider
from runtime.providers.openai import OpenAIProvider

log = logging.getLogger("plugway.router")
JSON = dict[str, Any]


@dataclass
class RouteLog:
    """What the router did for one upstream call: served by, and failed attempts."""

    provider: str | None = None
    model: str | None = None
    attempts: list[JSON] = field(default_factory=list)


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
    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self.settings = settings
        self.providers = providers
        self._models = {model.id: model for model in settings.models}

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRouter:
        return cls(settings, {p.id: build_provider(p) for p in settings.providers})

    def model(self, model_id: str) -> ModelConfig | None:
        return self._models.get(model_id)

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

    async def chat(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON:
        route = route if route is not None else RouteLog()
        last: UpstreamError | None = None
        for candidate in self._chain(model):
            provider = self.providers[candidate.provider]
            try:
                response = await provider.chat(self._upstream_body(candidate, body))
            except UpstreamError as exc:
                if exc.client_error:
                    raise self._client_error(exc) from exc
                route.attempts.append({"provider": provider.id, "model": candidate.id, "error": exc.message})
                log.warning("model %s via %s failed: %s", candidate.id, provider.id, exc.message)
                last = exc
                continue
            route.provider, route.model = provider.id, candidate.id
            return response
        raise upstream_unavailable(last.message if last else "no provider available")

    async def stream(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> AsyncIterator[JSON]:
        route = route if route is not None else RouteLog()
        last: UpstreamError | None = None
        for candidate in self._chain(model):
            provider = self.providers[candidate.provider]
            stream = provider.stream_chat(self._upstream_body(candidate, body))
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                route.attempts.append({"provider": provider.id, "model": candidate.id, "error": "empty stream"})
                last = UpstreamError(f"provider '{provider.id}' sent an empty stream")
                continue
            except UpstreamError as exc:
                await stream.aclose()
                if exc.client_error:
                    raise self._client_error(exc) from exc
                route.attempts.append({"provider": provider.id, "model": candidate.id, "error": exc.message})
                log.warning("model %s via %s failed: %s", candidate.id, provider.id, exc.message)
                last = exc
                continue
            route.provider, route.model = provider.id, candidate.id
            try:
                yield first
                async for chunk in stream:
                    yield chunk
            finally:
                await stream.aclose()
            return
        raise upstream_unavailable(last.message if last else "no provider available")

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
