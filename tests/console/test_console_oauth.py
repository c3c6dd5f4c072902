"""OAuth on ``/mcp`` in Chromium: the ``mcp`` SDK's client signs in, a person approves on the console's
consent page, the client uses tools; revoking the application in the console ends its access."""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import mcp_types as types

from tests.console.browser import screenshot
from tests.mcp_oauth.support import CALLBACK_PATH, SignIn
from tests.support import GatewayServer

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route


class ClientThread:
    """The SDK's client in its own thread and event loop (Playwright's sync API holds the main thread's)."""

    def __init__(self, server: GatewayServer) -> None:
        self.authorization_urls: queue.Queue[str] = queue.Queue()
        self.callbacks: queue.Queue[str] = queue.Queue()
        self.sign_in = SignIn(server, self._consent)
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _consent(self, authorization_url: str) -> str:
        self.authorization_urls.put(authorization_url)
        return await asyncio.to_thread(self.callbacks.get, True, 60)

    async def _run(self) -> None:
        try:
            async with self.sign_in.client() as client:
                self.result["tools"] = [tool.name for tool in (await client.list_tools()).tools]
                called = await client.call_tool("calculator__evaluate", {"expression": "6*7"})
                self.result["answer"] = "".join(block.text for block in called.content if isinstance(block, types.TextContent))
        except BaseException as exc:  # handed to the test
            self.result["error"] = exc

    def start(self) -> ClientThread:
        self._thread.start()
        return self

    def join(self) -> dict[str, Any]:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the MCP client did not finish"
        if "error" in self.result:
            raise self.result["error"]
        return self.result


def test_an_mcp_client_signs_in_through_the_consent_page_and_loses_access_when_revoked(
    page: Page, console_server: GatewayServer, admin_key: str
) -> None:
    from playwright.sync_api import expect

    callbacks: list[str] = []

    def callback(route: Route) -> None:
        # The client's redirect URI: where the browser lands with the code.
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="You can close this tab.")

    page.route(re.compile(re.escape(console_server.url + CALLBACK_PATH) + r".*"), callback)
    client = ClientThread(console_server).start()

    # The client sends the person to plugway's authorization endpoint; plugway sends them to the
    # console's consent page, which first asks them to sign in.
    page.goto(client.authorization_urls.get(timeout=60))
    expect(page).to_have_url(re.compile(r".*/console/sign-in\?next=%2Fconsole%2Foauth%3Frequest%3D"))
    field = page.get_by_label("Admin key")
    field.fill(admin_key)
    field.press("Enter")
    expect(page).to_have_url(re.compile(re.escape(console_server.url) + r"/console/oauth\?request="))
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#consent-client")).to_have_text("Test Assistant")
    screenshot(page, "oauth-consent")
    page.get_by_label("Organisation").select_option("shop")
    page.get_by_role("button", name="Approve").click()

    expect(page.locator("body")).to_have_text("You can close this tab.")
    assert len(callbacks) == 1 and "code=" in callbacks[0] and "iss=" in callbacks[0]
    client.callbacks.put(callbacks[0])
    result = client.join()
    assert "calculator__evaluate" in result["tools"] and "testkit__slow" in result["tools"]
    assert "clock__now" not in result["tools"]  # shop's tools, not acme's
    assert "42" in result["answer"]

    # The application is listed, and revoking it ends its access at the next call.
    page.goto(console_server.url + "/console/oauth")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    row = page.locator("#grants tbody tr", has_text="Test Assistant")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("shop")
    screenshot(page, "oauth-grants")
    row.get_by_role("button", name="Revoke").click()
    page.locator("#confirm-accept").click()
    expect(page.locator("#grants tbody tr", has_text="Test Assistant")).to_have_count(0)

    tokens = client.sign_in.storage.tokens
    assert tokens is not None
    refused = httpx.post(
        f"{console_server.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json, text/event-stream"},
    )
    assert refused.status_code == 401


def test_denying_on_the_consent_page_sends_the_browser_back_with_access_denied(
    page: Page, console_server: GatewayServer, admin_key: str
) -> None:
    from playwright.sync_api import expect

    from tests.console.browser import sign_in

    redirect_uri = console_server.url + CALLBACK_PATH
    registered = httpx.post(
        f"{console_server.url}/oauth/register",
        json={"client_name": "Unwelcome", "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
    ).json()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": registered["client_id"],
            "redirect_uri": redirect_uri,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "state": "xyz",
        }
    )
    consent = httpx.get(f"{console_server.url}/oauth/authorize?{query}", follow_redirects=False).headers["location"]
    callbacks: list[str] = []

    def callback(route: Route) -> None:
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="Denied.")

    page.route(re.compile(re.escape(redirect_uri) + r".*"), callback)
    sign_in(page, console_server, admin_key, consent.removeprefix(console_server.url))
    expect(page.locator("#consent-client")).to_have_text("Unwelcome")
    page.get_by_role("button", name="Deny").click()
    expect(page.locator("body")).to_have_text("Denied.")
    sent_back = parse_qs(urlsplit(callbacks[0]).query)
    assert sent_back["error"] == ["access_denied"] and sent_back["state"] == ["xyz"] and "code" not in sent_back
