"""The console's Plugins page in a real browser: an MCP server that cannot start shows its
state and the reason it failed, both on its card and in the gateway's health list."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from runtime.storage.keys import mint_admin_key
from tests.console.browser import sign_in
from tests.fakes.openai_server import FakeOpenAI
from tests.support import Gateways, GatewayServer, make_settings

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser_context fixture says so: a skip locally, a failure under CI=true
    expect = None  # type: ignore[assignment]

REASON = "cannot open the licence file /etc/lab/licence"
FAILING_SERVER = [sys.executable, "-c", f"import sys; sys.stderr.write({REASON!r} + '\\n'); sys.exit(2)"]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("console-mcp"),
        upstream_server.base_url,
        extra_orgs=[{"id": "lab", "plugins": [{"id": "calculator"}, {"id": "licences", "mcp": {"command": FAILING_SERVER}}]}],
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture(scope="module")
def admin_key(console_server: GatewayServer) -> str:
    secret, _row = mint_admin_key(console_server.gateway.engine, name="console-mcp-tests")
    return secret


def test_an_mcp_server_that_cannot_start_shows_its_state_and_why(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    sign_in(page, console_server, admin_key, "/console/plugins")
    card = page.locator('section.card[data-plugin="licences"]')
    expect(card.locator(".plugin-error")).to_contain_text(REASON)
    # Down (or between two attempts to restart it): never shown as healthy.
    expect(card.locator(".plugin-head .badge.good")).to_have_count(0)
    expect(card.locator(".plugin-head .badge.bad, .plugin-head .badge.warn")).to_have_count(1)
    expect(card).to_contain_text("No tools while it is unavailable.")
    expect(page.locator("#health-checks")).to_contain_text(REASON)
    # A healthy neighbour on the same page is shown as such.
    expect(page.locator('section.card[data-plugin="calculator"][data-organisation="lab"] .badge.good')).to_be_visible()
