"""Shared pieces for end-to-end tests: the real gateway under uvicorn, the official SDK as client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from runtime.json_types import JSON
from tests.fakes.anthropic_server import DEFAULT_API_KEY, fake_anthropic, fake_anthropic_server
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

ACME_PLUGINS: list[JSON] = [
    {"id": "clock"},
    {"id": "calculator"},
    {"id": "testkit", "config": {"flavour": "vanilla"}},
]


def openai_provider(provider_id: str, base_url: str, **options: Any) -> JSON:
    return {
        "id": provider_id,
        "kind": "openai",
        "base_url": base_url,
        "api_key": UPSTREAM_KEY,
        "timeout_s": 10,
        "max_retries": 0,
        **options,
    }


def anthropic_provider(provider_id: str, base_url: str, **options: Any) -> JSON:
    return {
        "id": provider_id,
        "kind": "anthropic",
        "base_url": base_url,
        "api_key": DEFAULT_API_KEY,
        "timeout_s": 10,
        "max_retries": 0,
        **options,
    }


def organisations() -> list[JSON]:
    # "acme" orchestrates (it has plugins); "plain" has none, so requests pass straight through.
    return [{"id": "acme", "plugins": [dict(p) for p in ACME_PLUGINS]}, {"id": "plain"}]


def sdk_client(server: GatewayServer, org: str = "plain") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=server.mint(org), max_retries=0, timeout=20
    )


Launch = Callable[..., GatewayServer]


@pytest.fixture
def launch(gateways: Gateways) -> Launch:
    """Start a gateway with the given providers and models (the shared ``gateways``, stopped at teardown)."""

    def start(*, providers: list[JSON], models: list[JSON], **overrides: Any) -> GatewayServer:
        overrides.setdefault("organisations", organisations())
        return gateways.start(
            directory=gateways.directory / f"gateway{len(gateways.started)}",
            upstream_url="http://127.0.0.1:9/unused",
            providers=providers,
            models=models,
            **overrides,
        )

    return start
