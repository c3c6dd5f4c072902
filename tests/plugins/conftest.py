from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from plugins import ssrf_guard
from runtime import ToolError
from runtime.plugin_host.isolation import default_isolation, shutdown_isolation


@pytest.fixture(scope="session", autouse=True)
def isolation_pool() -> Iterator[None]:
    """Start the shared worker pool up front, so no test's time bound includes its start-up."""
    default_isolation().start()
    yield
    shutdown_isolation()


class StubResolver:
    """Stands in for DNS: names resolve only to the addresses a test gives them."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    def __call__(self, host: str, *addresses: str) -> None:
        self.answers[host] = list(addresses)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        if host not in self.answers:
            raise ToolError(f"cannot resolve host '{host}'")
        return self.answers[host]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubResolver]:
    """The http plugin's resolver, stubbed: no test resolves or reaches a real name."""
    stub = StubResolver()
    monkeypatch.setattr(ssrf_guard, "resolve_host", stub.resolve)
    yield stub
