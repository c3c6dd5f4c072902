"""Shared pieces for end-to-end tests: the real gateway under uvicorn, the official SDK as client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_server import DEFAULT_API_KEY, fake_anthropic, fake_anthropic_server
from tests.support import UPSTREAM_KEY, GatewayServer, make_settings

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

JSON = dict[str, Any]
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
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start a gateway with the given providers and models; stopped at teardown."""
    started: list[GatewayServer] = []

    def start(*, providers: list[JSON], models: list[JSON], **overrides: Any) -> GatewayServer:
        directory = tmp_path / f"gateway{len(started)}"
        directory.mkdir()
        settings = make_settings(
            directory,
            "http://127.0.0.1:9/unused",
            providers=providers,
            models=models,
            organisations=overrides.pop("organisations", organisations()),
            **overrides,
        )
        server = GatewayServer(settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
