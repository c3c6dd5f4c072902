"""The console as HTTP serves it: page shells under a strict policy, files from the package, nothing from elsewhere."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runtime.api.app import create_app
from runtime.console.routes import CONTENT_SECURITY_POLICY, PAGES
from tests.support import make_settings

PACKAGE = Path(__file__).resolve().parents[2] / "runtime" / "console"
REPOSITORY = PACKAGE.parents[1]
SHIPPED = sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.parent != PACKAGE and "__pycache__" not in p.parts)
SCRIPTS = sorted((PACKAGE / "static" / "js").glob("*.js"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # No lifespan: the console's own routes need no gateway, which is the point of a shell.
    app = create_app(make_settings(tmp_path_factory.mktemp("pages"), "http://127.0.0.1:9/v1"))
    yield TestClient(app)


@pytest.mark.parametrize("path", [page.path for page in PAGES] + ["/console/sign-in"])
def test_every_page_is_a_shell_with_its_own_module_and_a_strict_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert response.headers["cache-control"] == "no-store"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", response.text, re.S)
    slug = path.removeprefix("/console").strip("/") or "overview"
    assert scripts == [(f' type="module" src="/console/static/js/{slug}.js"', "")]  # no inline script
    assert 'style="' not in response.text
    module = client.get(f"/console/static/js/{slug}.js")
    assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
    if path != "/console/sign-in":
        links = re.findall(r'<a href="(/console[^"]*)"( aria-current="page")?>', response.text)
        assert {page.path for page in PAGES} <= {href for href, _ in links}
        assert [href for href, current in links if current] == [path]


def test_every_import_between_scripts_resolves(client: TestClient) -> None:
    for script in SCRIPTS:
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert (PACKAGE / "static" / "js" / imported).is_file(), f"{script.name} imports a missing {imported}"
            assert client.get(f"/console/static/js/{imported}").status_code == 200


def test_nothing_is_fetched_from_elsewhere_and_no_html_is_built_from_strings() -> None:
    for path in SHIPPED:
        text = path.read_text()
        outside = [url for url in re.findall(r"https?://[^\s\"'`)]+", text) if url != "http://www.w3.org/2000/svg"]
        assert outside == [], f"{path.name} points outside the gateway: {outside}"
        if path.suffix == ".js":
            # The admin key sits in sessionStorage: nothing the API returns may become markup.
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert sink not in text, f"{path.name} uses {sink}"


def test_static_files_are_revalidated_and_nothing_else_is_served(client: TestClient) -> None:
    first = client.get("/console/static/console.css")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/css")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/console/static/console.css", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/console/static/favicon.svg").headers["content-type"] == "image/svg+xml"
    for path in (
        "/console/static/missing.css",
        "/console/static/js/..%2F..%2Froutes.py",
        "/console/static/%2e%2e/routes.py",
        "/console/static/.hidden.js",
        "/console/static/Console.css",
        "/console/static/js",
    ):
        assert client.get(path).status_code == 404, path


def test_an_unknown_page_is_a_404_page(client: TestClient) -> None:
    response = client.get("/console/nowhere")
    assert response.status_code == 404
    assert "There is no console page" in response.text and 'href="/console"' in response.text


def test_the_distribution_ships_every_template_and_static_file() -> None:
    """What pyproject's package-data globs match (as setuptools reads them) is every file the console serves."""
    settings = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    patterns = settings["tool"]["setuptools"]["package-data"]["runtime.console"]
    matched = {path for pattern in patterns for path in PACKAGE.glob(pattern)}
    assert SHIPPED and set(SHIPPED) == matched, sorted(str(p.relative_to(PACKAGE)) for p in set(SHIPPED) ^ matched)
