"""The console's Authorize button for an MCP server that needs OAuth, in a real browser.

An admin signs in to the console, presses Authorize on the server's card, signs in at
the upstream's own authorization server (tests/fakes/oauth_mcp.py, the `mcp` SDK's
components), and comes back to the console with the server authorized and its tools
offered. No public_url is configured: the redirect URI is the console's own address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from runtime.storage.keys import mint_admin_key
from tests.console.browser import sign_in
from tests.fakes.oauth_mcp import OAuthMcpServer
from tests.fakes.openai_server import FakeOpenAI
from tests.support import GatewayServer, make_settings, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser_context fixture says so: a skip locally, a failure under CI=true
    expect = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def upstream_mcp() -> Iterator[OAuthMcpServer]:
    server = OAuthMcpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI, upstream_mcp: OAuthMcpServer) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("console-oauth"),
        upstream_server.base_url,
        plugins=[{"id": "crm", "mcp": {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth"}}}],
        secrets_key="console-oauth-test-key-" + "y" * 20,
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser_context: BrowserContext, console_server: GatewayServer, upstream_mcp: OAuthMcpServer) -> Iterator[Page]:
    """A fresh tab that raises no script error; it may visit the upstream's authorization server, nothing else."""
    tab = browser_context.new_page()
    script_errors: list[str] = []
    foreign: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    allowed = (console_server.url, upstream_mcp.base_url, "data:", "blob:")
    tab.on("request", lambda sent: None if sent.url.startswith(allowed) else foreign.append(sent.url))
    try:
        yield tab
    finally:
        tab.close()
    assert script_errors == [], f"the console's scripts raised: {script_errors}"
    assert foreign == [], f"the console fetched from elsewhere: {foreign}"


def test_an_admin_authorizes_an_mcp_server_from_its_card(page: Page, console_server: GatewayServer, upstream_mcp: OAuthMcpServer) -> None:
    admin_key, _ = mint_admin_key(console_server.gateway.engine, name="console-oauth")
    sign_in(page, console_server, admin_key, "/console/plugins")
    card = page.locator('section.card[data-plugin="crm"]')
    expect(card.locator(".authorization")).to_contain_text("not authorized")
    expect(card.locator(".plugin-error")).to_contain_text("not authorized for organisation 'acme' yet")

    card.get_by_role("button", name="Authorize").click()
    # The upstream's own sign-in page (the SDK's /authorize sent the browser to its /login).
    page.wait_for_url(f"{upstream_mcp.base_url}/login?*")
    page.goto(page.url + "&user=acme-admin@upstream")
    # Back on the console, the server authorized.
    page.wait_for_url(f"{console_server.url}/console/plugins*")
    expect(page.locator("#toasts")).to_contain_text("crm is authorized")
    expect(card.locator(".authorization .badge.good")).to_have_text("authorized")
    expect(card.locator(".authorization")).to_contain_text("(console-oauth)")

    ref = console_server.settings.organisations[0].plugins[0]
    wait_until(lambda: console_server.gateway.mcp.connection_health(ref, organisation="acme")["healthy"], "the connection to come up")
    page.locator("#refresh").click()
    expect(card.locator('li.tool[data-tool="crm__whoami"]')).to_be_visible()
    # Trying the tool runs it as the account the admin signed in with.
    card.get_by_role("button", name="Try crm__whoami").click()
    page.locator("#tool-run").click()
    expect(page.locator("#tool-result-content")).to_contain_text("account:acme-admin@upstream")
