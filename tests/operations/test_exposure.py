"""What an unauthenticated caller can learn: /readyz says ready or not and names no plugin or
organisation; /metrics (every organisation's spend) is served only to a scraper the operator
allowed: this machine by default, a token, or a separate listener."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.limits.limits_redis_server import free_port
from tests.support import Gateways, make_settings


def test_readyz_names_no_plugin_and_no_organisation(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    unreachable = {"id": "ledger-sync", "mcp": {"url": f"http://127.0.0.1:{free_port()}/mcp"}}
    orgs = [{"id": "tenant-beta", "plugins": [{"id": "clock"}, {**unreachable, "id": "beta-crm"}]}]
    settings = make_settings(tmp_path, upstream.base_url, plugins=[{"id": "calculator"}, unreachable], extra_orgs=orgs)
    server = gateways.start(settings)
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ready"
    for name in ("ledger-sync", "beta-crm", "calculator", "clock", "tenant-beta", "acme", "mcp"):
        assert name not in response.text, name


def test_metrics_are_served_by_default_to_this_machine_only(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    server = gateways.start()
    local = httpx.get(f"{server.url}/metrics", timeout=10)
    assert local.status_code == 200 and "plugway_requests_total" in local.text
    # Through a proxy (a forwarding header): someone else's request, refused without the numbers.
    proxied = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "6.6.6.6"}, timeout=10)
    assert proxied.status_code == 403 and proxied.json()["error"]["code"] == "insufficient_permissions"
    assert "metrics.token" in proxied.json()["error"]["message"] and "plugway_" not in proxied.text


def test_a_trusted_proxys_client_is_judged_not_the_proxy(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    server = gateways.start(trusted_proxies=["127.0.0.1"])
    proxied = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "6.6.6.6"}, timeout=10)
    assert proxied.status_code == 403


def test_metrics_listen_serves_them_on_a_separate_listener_only(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    port = free_port()
    server = gateways.start(metrics={"listen": f"127.0.0.1:{port}"})
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200 and "plugway_requests_total" in scraped.text
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 404
    server.stop()
    # The listener closes with the gateway.
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        raise AssertionError("the metrics listener outlived the gateway")
    except httpx.ConnectError:
        pass
