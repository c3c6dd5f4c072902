"""A real headless browser for the console: Playwright driving Debian's Chromium.

``make test`` installs Chromium (``apt-get install chromium``, as root) when it
is missing; a machine without it skips these tests locally, with the reason,
and fails them under ``CI=true``. Playwright's own browser downloads are never
used: the network is closed, and Debian's build is the one we support.

Every page a test visits is screenshotted into ``test-artifacts/console/``
(git-ignored; ``PLUGWAY_TEST_ARTIFACTS`` moves it). With
``PLUGWAY_UPDATE_SCREENSHOTS=1`` the README's screenshots in
``docs/screenshots/`` are refreshed too.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support import GatewayServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPOSITORY = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PLUGWAY_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: no first-run pages, no update checks, no sync, no QUIC probes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("PLUGWAY_TEST_ARTIFACTS") or REPOSITORY / "test-artifacts") / "console"
README_SCREENSHOTS = {"overview", "playground", "requests"}


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("PLUGWAY_UPDATE_SCREENSHOTS") == "1" and name in README_SCREENSHOTS:
        target = REPOSITORY / "docs" / "screenshots" / f"console-{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def sign_in(page: Page, server: GatewayServer, admin_key: str, path: str = "/console") -> None:
    """Open a console address, get sent to sign in, sign in with the keyboard, land where we meant to go."""
    from playwright.sync_api import expect

    page.goto(server.url + path)
    expect(page).to_have_url(re.compile(r".*/console/sign-in\?next=%2Fconsole"))
    field = page.get_by_label("Admin key")
    field.fill(admin_key)
    field.press("Enter")
    expect(page).to_have_url(server.url + path)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
