"""A provider's circuit breaker is kept per organisation (issue 21): one tenant's failing traffic
opens the breaker for that tenant, never for the others."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import GatewayError, UpstreamError
from runtime.json_types import JSON
from tests.orchestration.conftest import Loop, Loops

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_one_organisations_failures_open_the_breaker_for_it_alone(loops: Loops) -> None:
    # A gateway of its own: the breaker it opens stays open for the rest of the session.
    loop: Loop = await loops.get(keepalive_s=4.5)
    breaker_failures = loop.gateway.settings.providers[0].breaker_failures

    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        if messages[-1]["content"] == "hang":
            # What one tenant's hanging streams look like to the router: the provider timed out.
            raise UpstreamError("provider 'fn' timed out (TimeoutError)", retryable=False)
        return "answered"

    loop.model(model)
    for _ in range(breaker_failures):
        with pytest.raises(GatewayError) as failed:
            await loop.run("hang", organisation="noisy")
        assert failed.value.status == 502
    asked = len(loop.requests)

    # The noisy organisation's breaker is open: its next request does not reach the provider.
    with pytest.raises(GatewayError) as refused:
        await loop.run("hello", organisation="noisy")
    assert refused.value.status == 502 and "circuit breaker open" in refused.value.message
    assert len(loop.requests) == asked

    # Another organisation on the same provider is served as before.
    result = await loop.run("hello", organisation="quiet")
    assert result.text == "answered"
    assert len(loop.requests) == asked + 1
