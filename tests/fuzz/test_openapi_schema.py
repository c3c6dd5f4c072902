"""Schema-driven fuzzing (issue 9): schemathesis generates requests for every route of the
app's own OpenAPI schema against a real gateway; none may answer 5xx, and every error must
come in its documented JSON envelope. Bounded per operation so it fits the CI budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from runtime.api.app import create_app
from runtime.config import Settings, settings_from_dict
from tests.support import Gateways, GatewayServer

FUZZ_EXAMPLES = 60


def fuzz_settings(directory: Path) -> Settings:
    return settings_from_dict(
        {
            "database_url": f"sqlite:///{directory / 'plugway.db'}",
            # The offline demo model: every generated request can reach the end of the pipeline.
            "providers": [{"id": "demo", "kind": "demo"}],
            "models": [{"id": "demo", "provider": "demo"}, {"id": "gpt-test", "provider": "demo"}],
            "organisations": [{"id": "acme", "plugins": [{"id": "calculator"}, {"id": "clock"}]}, {"id": "bare"}],
            "orchestration": {"tool_timeout_s": 2, "keepalive_s": 0.5},
            "usage": {"flush_interval_s": 0.05},
        }
    )


# The schema is the app's own, read without starting it (nothing opens before the lifespan).
schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("/nonexistent"))).openapi())


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with Gateways() as started:
        yield started.start(fuzz_settings(tmp_path_factory.mktemp("fuzz")))


@pytest.fixture(scope="module")
def fuzz_key(fuzzed_gateway: GatewayServer) -> str:
    return fuzzed_gateway.mint("acme")


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_route_answers_5xx_and_errors_keep_their_envelope(case: schemathesis.Case, fuzzed_gateway: GatewayServer, fuzz_key: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzz_key}"}
    response = case.call(base_url=fuzzed_gateway.url, timeout=20)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict), response.text[:500]
        if case.path.startswith("/api/") and response.status_code != 405:
            # Endpoints answer {"ok": false, "error": "<message>", "code": "<code>"}.
            assert body.get("ok") is False and isinstance(body.get("error"), str) and isinstance(body.get("code"), str), response.text[:500]
        else:
            # OpenAI's envelope, or Anthropic's on /v1/messages: both an "error" object with a message.
            error = body.get("error")
            assert isinstance(error, dict) and isinstance(error.get("message"), str), response.text[:500]
