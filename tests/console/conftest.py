"""Fixtures for the console's browser tests: one Chromium for the session, one gateway per module, a tab per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runtime.storage.keys import mint_admin_key
from tests.console.browser import CHROMIUM, CHROMIUM_ARGS, screenshot
from tests.fakes.openai_server import FakeOpenAI
from tests.services import missing
from tests.support import Gateways, GatewayServer, make_settings

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CONSOLE_ORGS: list[dict[str, Any]] = [
    {
        "id": "shop",
        "plugins": [{"id": "calculator"}, {"id": "testkit"}],
        "monthly_budget_usd": 50.0,
        "endpoints": [{"slug": "yaml-helper", "model": "gpt-test", "description": "From the YAML file", "plugins": []}],
    },
]


# Module scope: Playwright's sync API runs an event loop in the main thread while
# it is open, and every later test calling asyncio.run() would find it running.
@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not Path(CHROMIUM).is_file():
        missing(f"no Chromium at {CHROMIUM}: `make test` installs Debian's (apt-get install chromium, as root); PLUGWAY_CHROMIUM names another")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
            locale="en-GB",
            timezone_id="UTC",
        )
        context.set_default_timeout(10_000)
        # Generous for a loaded 2-core machine; a console that works answers in well under a second.
        from playwright.sync_api import expect

        expect.set_options(timeout=10_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI) -> Iterator[GatewayServer]:
    """One gateway for a module's browser tests; key_cache_ttl_s 0 makes a revocation bite at once."""
    settings = make_settings(tmp_path_factory.mktemp("console"), upstream_server.base_url, extra_orgs=CONSOLE_ORGS, key_cache_ttl_s=0)
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture(scope="module")
def admin_key(console_server: GatewayServer) -> str:
    secret, _row = mint_admin_key(console_server.gateway.engine, name="console-tests")
    return secret


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
def page(browser_context: BrowserContext, console_server: GatewayServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab (so an empty sessionStorage) that must raise no script error and fetch nothing from elsewhere."""
    tab = browser_context.new_page()
    script_errors: list[str] = []
    foreign: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    tab.on("request", lambda sent: None if sent.url.startswith((console_server.url, "data:", "blob:")) else foreign.append(sent.url))
    try:
        yield tab
        if request.node.stash.get(_FAILED, False):
            screenshot(tab, f"failed-{request.node.name}")
    finally:
        tab.close()
    assert script_errors == [], f"the console's scripts raised: {script_errors}"
    assert foreign == [], f"the console fetched from elsewhere: {foreign}"
