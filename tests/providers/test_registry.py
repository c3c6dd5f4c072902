"""Provider kinds come from the registry: a kind registered here serves requests, and its profile is what the router reads."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.config import ConfigError, settings_from_dict
from runtime.json_types import JSON
from runtime.providers.registry import (
    ProviderKind,
    ProviderProfile,
    profile_for,
    provider_kind,
    register_provider_kind,
    unregister_provider_kind,
)
from tests.support import Gateways, make_settings


class ShoutingProvider:
    """A provider kind defined in this test module: it answers with the last user message in capitals."""

    kind = "shouting"

    def __init__(self, config: Any) -> None:
        self.id = config.id

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        text = str(body["messages"][-1]["content"]).upper()
        return {
            "id": "chatcmpl-shout",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        raise NotImplementedError
        yield {}

    async def aclose(self) -> None:
        return None


@pytest.fixture
def shouting_kind() -> Iterator[ProviderKind]:
    kind = ProviderKind("shouting", ShoutingProvider, ProviderProfile(max_tools=3), needs_base_url=False)
    register_provider_kind(kind)
    try:
        yield kind
    finally:
        unregister_provider_kind("shouting")


def test_a_kind_registered_by_a_test_module_serves_a_request(tmp_path: Path, shouting_kind: ProviderKind, gateways: Gateways) -> None:
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/unused",
        providers=[{"id": "loud", "kind": "shouting"}],
        models=[{"id": "shout-1", "provider": "loud"}],
        organisations=[{"id": "acme"}],
    )
    server = gateways.start(settings)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    response = client.chat.completions.create(model="shout-1", messages=[{"role": "user", "content": "hello there"}])
    assert response.choices[0].message.content == "HELLO THERE"
    assert response.usage is not None and response.usage.total_tokens == 5
    router = server.gateway.router
    model = router.model("shout-1")
    assert model is not None
    # The router reads the kind's profile: its tool limit, and no native Messages API.
    assert router.tool_limit(model) == 3
    assert not router.speaks_natively(model, "messages")
    assert not router.can_embed(model)


def test_an_unregistered_kind_is_refused_naming_the_kinds_that_exist() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"providers": [{"id": "p", "kind": "wizard"}]})
    assert "providers[0].kind" in str(info.value)
    assert "openai" in str(info.value) and "anthropic" in str(info.value)


def test_a_kind_that_needs_a_base_url_is_refused_without_one() -> None:
    with pytest.raises(ConfigError, match="needs a base_url"):
        settings_from_dict({"providers": [{"id": "p", "kind": "anthropic"}]})
    settings_from_dict({"providers": [{"id": "p", "kind": "demo"}]})


def test_a_model_overrides_its_kinds_vision() -> None:
    assert provider_kind("openai").profile.vision
    assert not profile_for("openai", vision=False).vision
    assert profile_for("demo", vision=True).vision
    assert profile_for("openai") is provider_kind("openai").profile


def test_a_kind_cannot_be_registered_twice(shouting_kind: ProviderKind) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_provider_kind(ProviderKind("shouting", ShoutingProvider))
