"""GET /metrics after a scripted mix of real requests, asserted series by series."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from runtime.providers.demo import demo_vector
from tests.cli.runner import PLUGWAY, plugway_env
from tests.fakes.anthropic_server import closed_port_url
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.limits.limits_redis_server import RedisServer
from tests.operations.conftest import (
    APP_SECRET,
    GRAPH_TOKEN,
    PHONE_NUMBER_ID,
    matching,
    ops_settings,
    post_whatsapp,
    scrape,
    value,
)
from tests.operations.test_serve import serve, write_config
from tests.operations.test_tracing import TRACE_SERVER
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer, wait_until
from tests.test_embedded_default import embedded, processes_mentioning

CHAT = "/v1/chat/completions"

__all__ = ["embedded", "serve"]  # fixtures used by name


def test_metrics_after_a_mix_of_requests(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, own_redis: RedisServer, gateways: Gateways) -> None:
    settings = ops_settings(tmp_path, upstream.base_url, graph.base_url, redis_url=own_redis.url)
    server = gateways.start(settings, run_worker=True)
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


def test_queue_depth_and_dead_letters_come_from_the_database(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, gateways: Gateways) -> None:
    """No worker runs here: what the webhook stored waits, and its age grows."""

    server = gateways.start(ops_settings(tmp_path, upstream.base_url, graph.base_url))
    assert post_whatsapp(server.url, "first").status_code == 200
    assert post_whatsapp(server.url, "second", sender="15557654321").status_code == 200
    wait_until(lambda: value(scrape(server.url), "plugway_whatsapp_oldest_pending_age_seconds", app="acme-support") > 0.2)
    series = scrape(server.url)
    server.stop()
    assert value(series, "plugway_whatsapp_queue_messages", app="acme-support", status="pending") == 2
    assert value(series, "plugway_whatsapp_queue_messages", app="acme-support", status="processing") == 0


def test_metrics_token_and_switch(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    server = gateways.start(metrics={"token": "scrape-secret"})
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "plugway_requests_total" in httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer scrape-secret"}).text
    off = gateways.start(metrics={"enabled": False}, directory=tmp_path / "off")
    assert httpx.get(f"{off.url}/metrics").status_code == 404


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


# -- MCP health and reconnects, dead letters, the usage backlog, upstream retries, embeddings, gauges under --workers 2 ---

APP = "acme-support"
MODELS = [
    {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
    # A dollar a token: one small embedding spends a small budget.
    {"id": "embed-small", "provider": "upstream", "upstream_model": "text-embedding-3-small", "embeddings": True, "price": {"input_per_mtok": 1e6}},
]


@pytest.fixture(scope="module")
def module_graph() -> Iterator[FakeGraphAPI]:
    server = FakeGraphAPI(tokens={PHONE_NUMBER_ID: GRAPH_TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ops_gateway(upstream_server: FakeOpenAI, module_graph: FakeGraphAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """The real app with its WhatsApp worker, a provider that retries once, MCP servers up and down, and a budget."""
    plugins = [
        {"id": "calculator"},
        {"id": "tracestdio", "mcp": {"command": [sys.executable, str(TRACE_SERVER)]}},
        {"id": "downhttp", "mcp": {"url": f"{closed_port_url()}/mcp"}},
    ]
    providers = [{"id": "upstream", "kind": "openai", "base_url": upstream_server.base_url, "api_key": UPSTREAM_KEY, "max_retries": 1}]
    settings = ops_settings(
        tmp_path_factory.mktemp("metrics-ops"), upstream_server.base_url, module_graph.base_url,
        plugins=plugins, providers=providers, models=MODELS, extra_orgs=[{"id": "thrifty", "monthly_budget_usd": 2.5}],
    )
    with Gateways() as started:
        yield started.start(settings, run_worker=True)


def test_mcp_server_up_and_reconnects_after_its_process_dies(ops_gateway: GatewayServer) -> None:
    wait_until(lambda: value(scrape(ops_gateway.url), "plugway_mcp_server_up", server="tracestdio") == 1)
    series = scrape(ops_gateway.url)
    assert value(series, "plugway_mcp_server_up", server="downhttp") == 0
    assert value(series, "plugway_mcp_reconnects_total", server="tracestdio") == 0
    pid = ops_gateway.gateway.mcp.health()["tracestdio"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: value(scrape(ops_gateway.url), "plugway_mcp_reconnects_total", server="tracestdio") == 1)
    wait_until(lambda: value(scrape(ops_gateway.url), "plugway_mcp_server_up", server="tracestdio") == 1)
    assert ops_gateway.gateway.mcp.health()["tracestdio"]["pid"] != pid
    assert value(scrape(ops_gateway.url), "plugway_mcp_reconnects_total", server="downhttp") == 0  # never up: no reconnect


def test_a_message_the_graph_api_refuses_becomes_a_dead_letter(ops_gateway: GatewayServer, upstream: FakeOpenAI, module_graph: FakeGraphAPI) -> None:
    assert value(scrape(ops_gateway.url), "plugway_whatsapp_dead_letters", app=APP) == 0
    upstream.enqueue(Reply(text="An answer nobody will get"))
    module_graph.fail_next(131026)  # Message Undeliverable: permanent, not retried
    assert post_whatsapp(ops_gateway.url, "hello?", sender="15550001111").status_code == 200
    wait_until(lambda: value(scrape(ops_gateway.url), "plugway_whatsapp_messages_total", app=APP, outcome="failed") == 1)
    series = scrape(ops_gateway.url)
    assert value(series, "plugway_whatsapp_dead_letters", app=APP) == 1
    assert value(series, "plugway_whatsapp_queue_messages", app=APP, status="pending") == 0
    assert value(series, "plugway_whatsapp_queue_messages", app=APP, status="processing") == 0
    assert value(series, "plugway_whatsapp_oldest_pending_age_seconds", app=APP) == 0
    assert module_graph.texts_to("15550001111") == []


def test_usage_backlog_grows_while_the_database_refuses_and_drains_after(ops_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    backlog = "plugway_usage_writer_backlog_rows"
    client = openai.OpenAI(base_url=ops_gateway.base_url, api_key=ops_gateway.mint("bare"), max_retries=0)
    engine = ops_gateway.gateway.engine
    wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 0)  # earlier tests' rows are written
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))
    try:
        upstream.enqueue(Reply(text="one"), Reply(text="two"))
        for _ in range(2):
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 2)
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))
    wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 0)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM usage_records WHERE organisation_id = 'bare'")).scalar() == 2


def test_usage_backlog_counts_the_batch_being_written(ops_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    # Another connection holds SQLite's write lock: the writer's insert waits (up to 30 s) with its
    # batch out of the buffer, and those rows are still not in the database.
    backlog = "plugway_usage_writer_backlog_rows"
    client = openai.OpenAI(base_url=ops_gateway.base_url, api_key=ops_gateway.mint("bare"), max_retries=0)
    wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 0)
    database = ops_gateway.gateway.engine.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        upstream.enqueue(Reply(text="one"), Reply(text="two"))
        for _ in range(2):
            client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 2, within_s=10)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: value(scrape(ops_gateway.url), backlog) == 0)


def test_an_upstream_retry_is_counted(ops_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    before = scrape(ops_gateway.url)
    upstream.enqueue(Reply(status=500), Reply(text="second time lucky"))
    client = openai.OpenAI(base_url=ops_gateway.base_url, api_key=ops_gateway.mint("bare"), max_retries=0)
    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "second time lucky" and len(upstream.requests) == 2
    after = scrape(ops_gateway.url)
    assert delta("plugway_upstream_retries_total", provider="upstream") == 1
    # One model call, its retry included: one ok observation, no error.
    calls = "plugway_upstream_request_duration_seconds_count"
    assert delta(calls, provider="upstream", model="gpt-test", outcome="ok") == 1
    assert delta(calls, provider="upstream", model="gpt-test", outcome="error") == 0


def test_embeddings_are_refused_with_402_once_the_budget_is_spent(ops_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=ops_gateway.base_url, api_key=ops_gateway.mint("thrifty"), max_retries=0)
    client.embeddings.create(model="embed-small", input="three small words")  # $3 of a $2.50 budget
    refusals = []
    for ask in (
        lambda: client.embeddings.create(model="embed-small", input="more"),
        lambda: client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}]),
    ):
        with pytest.raises(openai.APIStatusError) as refused:
            ask()
        refusals.append(refused.value)
    assert [error.status_code for error in refusals] == [402, 402]
    assert refusals[0].body == refusals[1].body and refusals[0].body["code"] == "insufficient_credits"  # type: ignore[index]
    assert len(upstream.requests) == 1  # neither refusal reached the provider
    series = scrape(ops_gateway.url)
    assert value(series, "plugway_requests_total", route="/v1/embeddings", organisation="thrifty", model="embed-small", provider="", status="402") == 1
    assert value(series, "plugway_cost_usd_total", organisation="thrifty", model="embed-small") == pytest.approx(3.0)


def test_the_embedded_default_embeds_with_the_demo_model_and_reports_its_mcp_servers(embedded: tuple[str, str, Path, str]) -> None:
    """`plugway serve` with no configuration: demo embeddings through the openai SDK; a bundled MCP server killed and back."""
    base, key, directory, _ = embedded
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    answer = client.embeddings.create(model="demo", input=["refund policy", "opening hours"], encoding_format="float")
    assert [len(item.embedding) for item in answer.data] == [256, 256]
    assert answer.data[0].embedding == pytest.approx(demo_vector("refund policy", 256), abs=1e-6)
    assert (answer.model_extra or {})["plugway_demo"].startswith("[demo model]")
    series = scrape(base)
    assert value(series, "plugway_requests_total", route="/v1/embeddings", organisation="default", model="demo", provider="demo", status="200") == 1
    assert value(series, "plugway_mcp_server_up", server="crm") == 1 and value(series, "plugway_mcp_server_up", server="kb") == 1

    (crm,) = [pid for pid in processes_mentioning(str(directory)) if b"mcp_servers.support_crm" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(crm, signal.SIGKILL)
    wait_until(lambda: value(scrape(base), "plugway_mcp_reconnects_total", server="crm") == 1)
    wait_until(lambda: value(scrape(base), "plugway_mcp_server_up", server="crm") == 1)
    assert value(scrape(base), "plugway_mcp_reconnects_total", server="kb") == 0


def test_gauges_are_not_multiplied_by_worker_processes(tmp_path: Path, upstream: FakeOpenAI, graph: FakeGraphAPI, serve: Any) -> None:
    """`plugway serve --workers 2` and a `plugway worker`: database gauges and MCP health read once, whichever process answers."""
    whatsapp = {
        "graph_api_base": graph.base_url,
        "poll_interval_s": 0.05,
        "apps": [{"id": APP, "organisation": "acme", "phone_number_id": PHONE_NUMBER_ID, "access_token": GRAPH_TOKEN,
                  "app_secret": APP_SECRET, "verify_token": "verify", "model": "gpt-test", "enabled_plugin_ids": ["calculator"]}],
    }
    plugins = [{"id": "calculator"}, {"id": "tracestdio", "mcp": {"command": [sys.executable, str(TRACE_SERVER)]}}]
    config = write_config(tmp_path, upstream, whatsapp=whatsapp, organisations=[{"id": "acme", "plugins": plugins}])
    url, _ = serve(config, "--workers", "2")
    worker = subprocess.Popen([*PLUGWAY, "worker", "--config", str(config)], cwd=tmp_path, env=plugway_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        upstream.responder = lambda body: Reply(text="An answer nobody will get")
        graph.fail_next(131026)
        assert post_whatsapp(url, "hello?").status_code == 200
        wait_until(lambda: value(scrape(url), "plugway_whatsapp_dead_letters", app=APP) == 1, within_s=60)
        wait_until(lambda: value(scrape(url), "plugway_mcp_server_up", server="tracestdio") == 1, within_s=30)
        for _ in range(6):  # a fresh connection each time: both processes answer some
            series = scrape(url)
            assert value(series, "plugway_whatsapp_dead_letters", app=APP) == 1
            assert value(series, "plugway_whatsapp_queue_messages", app=APP, status="pending") == 0
            assert value(series, "plugway_mcp_server_up", server="tracestdio") == 1  # up in every process, not 2
            assert value(series, "plugway_usage_writer_backlog_rows") == 0
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
