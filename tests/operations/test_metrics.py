"""GET /metrics after a scripted mix of real requests, asserted series by series."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.limits.limits_redis_server import RedisServer
from tests.operations.conftest import (
    WorkerGatewayServer,
    matching,
    ops_settings,
    post_whatsapp,
    scrape,
    value,
    wait_until,
)

CHAT = "/v1/chat/completions"


def test_metrics_after_a_mix_of_requests(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, own_redis: RedisServer) -> None:
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, redis_url=own_redis.url)
    server = WorkerGatewayServer(settings).start()
    try:
        bare = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
        acme = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
        # Passthrough (no plugins), streamed and not.
        upstream.enqueue(Reply(text="plain", prompt_tokens=10, completion_tokens=5), Reply(text="streamed", prompt_tokens=3, completion_tokens=2))
        bare.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        list(bare.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True))
        # Orchestrated: one calculator round, then a failing tool, then the answer.
        upstream.enqueue(
            Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]),
            Reply(tool_calls=[("testkit__boom", {})]),
            Reply(text="42, and the other tool broke"),
        )
        acme.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "what is 6*7?"}])
        # The upstream fails: 502 after the router gave up.
        upstream.enqueue(Reply(status=500))
        with pytest.raises(openai.InternalServerError):
            bare.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        # A key over its RPM: 429 from the limiter.
        limited = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare", rpm=1), max_retries=0)
        upstream.enqueue(Reply(text="once"))
        limited.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError):
            limited.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        # WhatsApp: a signed delivery, answered by the in-process worker.
        upstream.enqueue(Reply(text="Hello from support"))
        assert post_whatsapp(server.url, "hello there").status_code == 200
        wait_until(lambda: bool(graph.texts_to("15551234567")))
        # Redis goes away: the limiter fails closed with 503 (for a key that has limits to check).
        checked = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare", rpm=100), max_retries=0)
        own_redis.stop()
        with pytest.raises(openai.APIStatusError) as refused:
            checked.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 503
        # An unknown path must not become a label.
        assert httpx.get(f"{server.url}/no/such/path/12345").status_code == 404

        wait_until(lambda: value(scrape(server.url), "plugway_whatsapp_messages_total", app="acme-support", outcome="answered") == 1)
        series = scrape(server.url)
    finally:
        server.stop()

    requests = "plugway_requests_total"
    assert value(series, requests, route=CHAT, organisation="bare", model="gpt-test", provider="upstream", status="200") == 3
    assert value(series, requests, route=CHAT, organisation="acme", model="gpt-test", provider="upstream", status="200") == 1
    assert value(series, requests, route=CHAT, organisation="bare", model="gpt-test", provider="", status="502") == 1
    assert value(series, requests, route=CHAT, organisation="bare", model="gpt-test", provider="", status="429") == 1
    assert value(series, requests, route=CHAT, organisation="bare", model="gpt-test", provider="", status="503") == 1
    assert value(series, requests, route="whatsapp_worker", organisation="acme", model="gpt-test", provider="upstream", status="200") == 1
    assert value(series, requests, route="/webhooks/whatsapp", organisation="", model="", provider="", status="200") == 1
    assert value(series, requests, route="unmatched", organisation="", model="", provider="", status="404") == 1
    assert not any("12345" in label for (_, labels) in series for _, label in labels)
    assert value(series, "plugway_request_duration_seconds_count", route=CHAT, model="gpt-test") == 7

    # Upstream: every round is one call to the provider; the failed one is an error; one stream had a first token.
    upstream_calls = matching(series, "plugway_upstream_request_duration_seconds_count", provider="upstream", model="gpt-test")
    assert upstream_calls == {
        frozenset({("provider", "upstream"), ("model", "gpt-test"), ("outcome", "ok")}): 2 + 3 + 1 + 1,
        frozenset({("provider", "upstream"), ("model", "gpt-test"), ("outcome", "error")}): 1,
    }
    assert value(series, "plugway_upstream_time_to_first_token_seconds_count", provider="upstream", model="gpt-test") == 1

    # Tokens and cost: the passthrough pair is 13 in, 7 out, at 1 and 2 dollars a million.
    assert value(series, "plugway_tokens_total", organisation="bare", model="gpt-test", provider="upstream", type="input") == 10 + 3 + 11
    assert value(series, "plugway_tokens_total", organisation="bare", model="gpt-test", provider="upstream", type="output") == 5 + 2 + 7
    assert value(series, "plugway_tokens_total", organisation="acme", model="gpt-test", provider="upstream", type="input") == 3 * 11 + 11
    assert value(series, "plugway_cost_usd_total", organisation="bare", model="gpt-test") == pytest.approx((24 * 1.0 + 14 * 2.0) / 1e6)

    # Tools: by plugin, public name and outcome; rounds per orchestrated request.
    tools = "plugway_tool_calls_total"
    assert value(series, tools, organisation="acme", plugin="calculator", tool="calculator__evaluate", outcome="ok") == 1
    assert value(series, tools, organisation="acme", plugin="testkit", tool="testkit__boom", outcome="tool_failed") == 1
    assert value(series, "plugway_tool_call_duration_seconds_count", plugin="testkit", tool="testkit__boom", outcome="tool_failed") == 1
    assert value(series, "plugway_orchestration_rounds_count", source="api", model="gpt-test") == 1
    assert value(series, "plugway_orchestration_rounds_sum", source="api", model="gpt-test") == 3
    assert value(series, "plugway_orchestration_rounds_bucket", source="api", model="gpt-test", le="2.0") == 0
    assert value(series, "plugway_orchestration_rounds_bucket", source="api", model="gpt-test", le="3.0") == 1

    # Limiter: decisions by organisation, the refusal, and Redis being away.
    assert value(series, "plugway_limiter_decisions_total", organisation="bare", decision="allowed") == 4
    assert value(series, "plugway_limiter_decisions_total", organisation="bare", decision="rpm") == 1
    assert value(series, "plugway_limiter_unavailable_total", operation="acquire") == 1
    assert value(series, "plugway_limiter_remaining_ratio_count", organisation="bare", limit="requests") == 1
    assert value(series, "plugway_limiter_remaining_ratio_bucket", organisation="bare", limit="requests", le="0.0") == 1

    # WhatsApp: the webhook stored one message, the worker answered it, nothing waits.
    assert value(series, "plugway_whatsapp_webhook_events_total", result="stored") == 1
    assert value(series, "plugway_whatsapp_queue_messages", app="acme-support", status="pending") == 0
    assert value(series, "plugway_whatsapp_oldest_pending_age_seconds", app="acme-support") == 0
    assert value(series, "plugway_whatsapp_dead_letters", app="acme-support") == 0
    assert ("plugway_usage_writer_backlog_rows", frozenset()) in series


def test_queue_depth_and_dead_letters_come_from_the_database(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI) -> None:
    """No worker runs here: what the webhook stored waits, and its age grows."""
    from tests.support import GatewayServer

    server = GatewayServer(ops_settings(tmp_path, upstream.base_url, graph.base_url)).start()
    try:
        assert post_whatsapp(server.url, "first").status_code == 200
        assert post_whatsapp(server.url, "second", sender="15557654321").status_code == 200
        wait_until(lambda: value(scrape(server.url), "plugway_whatsapp_oldest_pending_age_seconds", app="acme-support") > 0.2)
        series = scrape(server.url)
    finally:
        server.stop()
    assert value(series, "plugway_whatsapp_queue_messages", app="acme-support", status="pending") == 2
    assert value(series, "plugway_whatsapp_queue_messages", app="acme-support", status="processing") == 0


def test_metrics_token_and_switch(tmp_path: Path, upstream: FakeOpenAI) -> None:
    from tests.support import GatewayServer, make_settings

    server = GatewayServer(make_settings(tmp_path, upstream.base_url, metrics={"token": "scrape-secret"})).start()
    try:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert "plugway_requests_total" in httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer scrape-secret"}).text
    finally:
        server.stop()
    off = GatewayServer(make_settings(tmp_path / "off", upstream.base_url, metrics={"enabled": False}))
    (tmp_path / "off").mkdir()
    off.start()
    try:
        assert httpx.get(f"{off.url}/metrics").status_code == 404
    finally:
        off.stop()


def test_the_grafana_dashboard_reads_only_metrics_that_exist() -> None:
    import json
    import re

    from runtime.telemetry.metrics import Metrics

    dashboard = json.loads((Path(__file__).parents[2] / "examples" / "grafana" / "plugway-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"] for name in re.findall(r"plugway_[a-z_]+", target["expr"])}
    registry = Metrics().registry
    assert registry is not None
    exported = {sample.name for family in registry.collect() for sample in family.samples} | {
        family.name + suffix for family in registry.collect() for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    assert used and used <= exported, used - exported
