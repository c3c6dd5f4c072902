"""No tool blocks the event loop and tool_timeout_s holds for every tool (issue 9, item 3).

The real gateway under uvicorn, the fake OpenAI upstream scripting the tool
call, and /healthz polled while the tool runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from runtime.plugin_host.manager import load_plugins
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.plugins import runaway_plugin
from tests.plugins.test_isolation import process_running, wait_until
from tests.plugins.tooling import Page, local_site
from tests.support import Gateways, GatewayServer

USER = [{"role": "user", "content": "go"}]
TOOL_TIMEOUT_S = 2.0
# Generous for a shared 2-core machine; a blocked loop answers after the whole computation.
HEALTHZ_BOUND_S = 1.5


class HealthProbe:
    """Polls /healthz from a thread while a request runs; remembers the slowest answer."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    client.get(f"{self.base_url}/healthz").raise_for_status()
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f} s")
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def assert_responsive(self, *, polls: int = 1) -> None:
        assert not self.failures, self.failures
        assert len(self.latencies) >= polls, self.latencies
        assert max(self.latencies) < HEALTHZ_BOUND_S, f"slowest /healthz: {max(self.latencies):.2f} s"


def scripted(tool_name: str, arguments: dict[str, Any]) -> Any:
    def respond(body: dict[str, Any]) -> Reply:
        if any(message["role"] == "tool" for message in body["messages"]):
            return Reply(text="done")
        return Reply(tool_calls=[(tool_name, arguments)])

    return respond


def tool_content(request: dict[str, Any]) -> str:
    (message,) = [m for m in request["messages"] if m["role"] == "tool"]
    return str(message["content"])


def tool_result(request: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(tool_content(request))
    return parsed


@pytest.fixture
def gateway_with(gateways: Gateways) -> Callable[[list[dict[str, Any]]], GatewayServer]:
    def start(plugins: list[dict[str, Any]]) -> GatewayServer:
        host = load_plugins(extra={"runaway": runaway_plugin})
        return gateways.start(plugin_host=host, plugins=plugins, orchestration={"tool_timeout_s": TOOL_TIMEOUT_S})

    return start


def ask(server: GatewayServer) -> tuple[openai.types.chat.ChatCompletion, float]:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0, timeout=30)
    started = time.monotonic()
    reply = client.chat.completions.create(model="gpt-test", messages=USER)  # type: ignore[arg-type]
    return reply, time.monotonic() - started


def test_a_pathological_calculator_expression_neither_blocks_nor_outlives_its_limit(gateway_with: Any, upstream: FakeOpenAI) -> None:
    server = gateway_with([{"id": "calculator"}])
    upstream.responder = scripted("calculator__evaluate", {"expression": "round(1, -10**8)"})
    with HealthProbe(server.url) as probe:
        reply, elapsed = ask(server)
        time.sleep(0.2)
    assert reply.choices[0].message.content == "done"
    assert elapsed < TOOL_TIMEOUT_S + 3  # it ran for minutes on the event loop before
    error = tool_result(upstream.requests[1])["error"]
    assert error["type"] == "tool_error" and "digits must be between" in error["message"]
    probe.assert_responsive()


def test_a_runaway_cpu_bound_tool_is_stopped_at_tool_timeout_s(gateway_with: Any, upstream: FakeOpenAI, tmp_path: Path) -> None:
    server = gateway_with([{"id": "runaway"}])
    pid_file = tmp_path / "worker.pid"
    upstream.responder = scripted("runaway__spin", {"pid_file": str(pid_file)})
    with HealthProbe(server.url) as probe:
        reply, elapsed = ask(server)
    assert reply.choices[0].message.content == "done"
    assert TOOL_TIMEOUT_S <= elapsed < TOOL_TIMEOUT_S + 3
    assert tool_result(upstream.requests[1])["error"]["type"] == "timeout"
    probe.assert_responsive(polls=5)
    worker = int(pid_file.read_text())
    assert wait_until(lambda: not process_running(worker), 5), "the runaway worker kept running after its timeout"


def test_a_pathological_page_does_not_block_the_gateway(gateway_with: Any, upstream: FakeOpenAI) -> None:
    server = gateway_with([{"id": "http", "config": {"allow_private": True}}])
    with local_site() as site:
        # Deep nesting, misnesting and unclosed tags: about 0.9 MB, under max_bytes.
        site.pages["/nested"] = Page(("<div><b><i>x" * 60_000 + " <a" * 60_000).encode())
        upstream.responder = scripted("http__fetch", {"url": f"{site.url}/nested"})
        with HealthProbe(server.url) as probe:
            reply, elapsed = ask(server)
            time.sleep(0.2)
    assert reply.choices[0].message.content == "done"
    assert elapsed < TOOL_TIMEOUT_S + 3
    content = tool_content(upstream.requests[1])  # cut at max_tool_result_chars, so not JSON
    assert content.startswith('{"url":') and '"status":200' in content and "x\\nx\\nx" in content
    probe.assert_responsive()
