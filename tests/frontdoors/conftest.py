"""Front-door tests against an Anthropic-format upstream: the same gateway, a Claude model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ACME_PLUGINS, anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic, fake_anthropic_server
from tests.support import Gateways, GatewayServer, make_settings

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

CLAUDE = "claude-test"
# "guarded" has guardrails_default: they apply on the Messages route, the native path included.
GUARDRAILS = [
    {"key": "pii", "kind": "pii", "action": "redact"},
    {"key": "words", "kind": "denylist", "terms": ["project falcon"], "action": "block", "apply_to": ["input", "output"]},
]


@pytest.fixture(scope="module")
def claude_gateway(fake_anthropic_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("claude-gateway"),
        fake_anthropic_server.base_url,
        providers=[anthropic_provider("claude", fake_anthropic_server.base_url, breaker_failures=100)],
        models=[{"id": CLAUDE, "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
        organisations=[
            {"id": "acme", "plugins": [dict(p) for p in ACME_PLUGINS]},
            {"id": "plain"},
            {"id": "guarded", "guardrails": GUARDRAILS, "guardrails_default": ["pii", "words"]},
        ],
    )
    with Gateways() as started:
        yield started.start(settings)
