"""Provider kinds: the one place that knows what each kind of upstream can do.

A provider kind is an adapter (a class built from one ``providers[]`` entry of
the configuration) and a :class:`ProviderProfile`, the kind's abilities as
data, in the spirit of pydantic-ai's ``ModelProfile``. Whoever needs to know
what a provider can do reads its profile: the router (tool limit, images in
tool results, JSON-schema output, the APIs it speaks natively, embeddings), the
configuration (which kinds exist, which need a ``base_url``) and telemetry
(``gen_ai.provider.name``). Nothing outside this module compares kinds.

A new provider kind is one adapter module and one :func:`register_provider_kind`
call; the built-in kinds are registered at the end of this module. Adapters are
named by import path and imported on first use, so reading the configuration
never loads an HTTP client.

This module imports nothing from the rest of the runtime: the configuration,
the router and telemetry all stand on it.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from runtime.json_types import JSON

# The wire APIs an adapter can forward a request in without translating it.
Api = Literal["chat", "responses", "messages"]
# OpenAI refuses more than 128 tools ("array too long"); kinds without a known limit are held to the same.
DEFAULT_MAX_TOOLS = 128


@runtime_checkable
class Provider(Protocol):
    """The one internal interface every provider adapter implements (see :mod:`runtime.providers.base`)."""

    id: str
    kind: str

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """One non-streamed completion; ``body["stream"]`` is false or absent.

        ``request_id`` goes upstream as ``X-Request-Id``, so one request can be
        followed across the gateway's and the provider's logs.
        """
        ...

    def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        """One streamed completion, as OpenAI chunk dicts (async generator)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What a provider kind (or one model of it) can do."""

    # APIs the adapter forwards natively: "chat" (chat completions), "responses", "messages".
    native_apis: frozenset[Api] = frozenset({"chat"})
    streaming: bool = True
    tools: bool = True
    parallel_tools: bool = True
    # Honours ``response_format: {"type": "json_schema"}``.
    json_schema_output: bool = False
    # Image parts in user messages reach the model.
    vision: bool = False
    # Sound parts (``input_audio``: wav or mp3) reach the model.
    audio: bool = False
    # The adapter can carry a tool result's images (Anthropic: image blocks in the tool_result;
    # chat completions: a user message with the images right after the round's tool messages).
    # They reach the model only when it has ``vision`` too; else it reads their description.
    tool_result_images: bool = False
    # Serves ``POST /embeddings``; the adapter then has an ``embeddings`` method.
    embeddings: bool = False
    # Reasoning or extended thinking (``reasoning_effort``, ``thinking``).
    reasoning: bool = False
    # Most tools one request may offer (a provider's ``max_tools`` setting narrows it).
    max_tools: int = DEFAULT_MAX_TOOLS
    # JSON Schema keywords removed from tool schemas before they reach this kind's upstreams
    # (see runtime.providers.tool_schemas): metadata some of them refuse.
    tool_schema_drops: frozenset[str] = frozenset()

    def speaks(self, api: Api) -> bool:
        return api in self.native_apis


ProviderFactory = Callable[[Any], Provider]


@dataclass(frozen=True)
class ProviderKind:
    """One provider kind: its name in the configuration, its adapter and its profile."""

    name: str
    # The adapter: a callable taking the provider's configuration, or "module:attribute" naming one.
    adapter: str | ProviderFactory
    profile: ProviderProfile = field(default_factory=ProviderProfile)
    needs_base_url: bool = True
    # OpenTelemetry GenAI's ``gen_ai.provider.name`` (default: the kind's name).
    telemetry_name: str | None = None
    # Other upstream APIs this kind can be called with (a provider's or a model's ``api``):
    # each its own adapter and profile. The default API is the kind's ``adapter`` and ``profile``.
    other_apis: dict[str, tuple[str | ProviderFactory, ProviderProfile]] = field(default_factory=dict)

    @property
    def apis(self) -> frozenset[str]:
        """The ``api`` values a provider of this kind accepts."""
        return frozenset({"chat", *self.other_apis})

    def profile_for_api(self, api: str | None) -> ProviderProfile:
        if api is not None and api in self.other_apis:
            return self.other_apis[api][1]
        return self.profile

    def build(self, config: Any, api: str | None = None) -> Provider:
        """The adapter for one configured provider (called with ``api``, default its own)."""
        factory = self.other_apis[api][0] if api is not None and api in self.other_apis else self.adapter
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            factory = getattr(importlib.import_module(module), attribute)
        assert callable(factory)
        return factory(config)

    @property
    def gen_ai_name(self) -> str:
        return self.telemetry_name or self.name


_KINDS: dict[str, ProviderKind] = {}


def register_provider_kind(kind: ProviderKind) -> None:
    """Make a provider kind available to the configuration (``providers[].kind``)."""
    if kind.name in _KINDS:
        raise ValueError(f"provider kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind


def unregister_provider_kind(name: str) -> None:
    """Forget a registered kind (tests that register their own)."""
    _KINDS.pop(name, None)


def provider_kind(name: str) -> ProviderKind:
    """The registered kind, or ``ValueError`` naming the kinds that exist."""
    kind = _KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown provider kind '{name}' (known: {', '.join(sorted(_KINDS))})")
    return kind


def provider_kinds() -> list[str]:
    return sorted(_KINDS)


def profile_for(kind: str, *, vision: bool | None = None, api: str | None = None, audio: bool | None = None) -> ProviderProfile:
    """The profile of a model served by a provider of ``kind`` (called with ``api``), with the model's own overrides."""
    profile = provider_kind(kind).profile_for_api(api)
    if vision is not None and vision != profile.vision:
        profile = replace(profile, vision=vision)
    if audio is not None and audio != profile.audio:
        profile = replace(profile, audio=audio)
    return profile


_OPENAI_PROFILE = ProviderProfile(
    json_schema_output=True,
    vision=True,
    tool_result_images=True,
    embeddings=True,
    reasoning=True,
    # OpenAI-compatible endpoints (Gemini's among them) refuse ``$schema``; none needs it.
    tool_schema_drops=frozenset({"$schema"}),
)

register_provider_kind(
    ProviderKind(
        "openai",
        "runtime.providers.openai:OpenAIProvider",
        _OPENAI_PROFILE,
        other_apis={
            # OpenAI's Responses API upstream: /v1/responses forwarded natively, chat translated.
            # A tool result's images go inside its function_call_output, as input_image parts.
            "responses": (
                "runtime.providers.openai_responses:OpenAIResponsesProvider",
                replace(_OPENAI_PROFILE, native_apis=frozenset({"responses"})),
            )
        },
    )
)
register_provider_kind(
    ProviderKind(
        "anthropic",
        "runtime.providers.anthropic:AnthropicProvider",
        ProviderProfile(native_apis=frozenset({"messages"}), vision=True, tool_result_images=True, reasoning=True),
    )
)
register_provider_kind(
    ProviderKind(
        "demo",
        "runtime.providers.demo:DemoProvider",
        ProviderProfile(json_schema_output=True, embeddings=True),
        needs_base_url=False,
        telemetry_name="plugway.demo",
    )
)
register_provider_kind(
    ProviderKind(
        "function",
        "runtime.providers.function:from_config",
        ProviderProfile(json_schema_output=True, vision=True, tool_result_images=True, reasoning=True),
        needs_base_url=False,
        telemetry_name="plugway.function",
    )
)
