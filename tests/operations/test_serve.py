"""`plugway serve` as a real process: JSON request lines, and metrics summed over --workers N."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.cli.runner import PLUGWAY, plugway, plugway_env
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.operations.conftest import scrape, value

UPSTREAM_KEY = "sk-test-upstream"
SECRET_WORDS = "my passport number is X1234567"
# `serve --workers 2` starts three interpreters: on a loaded two-core machine that took over a minute.
STARTUP_S = 180.0


def write_config(directory: Path, upstream: FakeOpenAI, **extra: Any) -> Path:
    config = {
        "database_url": f"sqlite:///{directory / 'plugway.db'}",
        "providers": [{"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "max_retries": 0}],
        "models": [{"id": "gpt-test", "provider": "upstream", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
        "organisations": [{"id": "acme"}],
        "usage": {"flush_interval_s": 0.05},
        **extra,
    }
    path = directory / "plugway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mint(directory: Path, config: Path) -> str:
    result = plugway("keys", "create", "--org", "acme", "--config", str(config), cwd=directory)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[str]] = []

    def start(config: Path, *flags: str) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        process = subprocess.Popen(
            [*PLUGWAY, "serve", "--config", str(config), "--port", str(port), "--no-worker", *flags],
            cwd=tmp_path, env=plugway_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url, process
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise AssertionError(process.stderr.read() if process.stderr else f"plugway serve exited with {process.returncode}")
            # Reading stderr of a live process would wait for it forever: say what is known instead.
            assert time.monotonic() < deadline, f"plugway serve not healthy on {url} after {STARTUP_S:g} s"
            time.sleep(0.1)

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def stop(process: subprocess.Popen[str]) -> str:
    """Stop the server as Ctrl-C does; everything it wrote to stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    return stderr


def test_json_request_lines_carry_the_fields_and_no_secrets(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream, logging={"format": "json"})
    key = mint(tmp_path, config)
    url, process = serve(config)
    upstream.enqueue(Reply(text="The answer mentions nothing secret", prompt_tokens=12, completion_tokens=3))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": SECRET_WORDS}], extra_headers={"X-Request-Id": "req-json-1"})
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="pw_not_a_real_key_at_all_123456", max_retries=0).models.list()
    stderr = stop(process)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines, stderr[-2000:]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    (request,) = [line for line in lines if line["logger"] == "plugway.request" and line.get("request_id") == "req-json-1"]
    assert request["status"] == 200 and request["route"] == "/v1/chat/completions" and request["method"] == "POST"
    assert request["organisation"] == "acme" and request["model"] == "gpt-test" and request["provider"] == "upstream"
    assert request["key_id"] and request["key_id"] not in key
    assert (request["rounds"], request["prompt_tokens"], request["completion_tokens"], request["total_tokens"]) == (1, 12, 3, 15)
    assert request["cost_usd"] == pytest.approx((12 + 6) / 1e6) and request["latency_ms"] > 0
    refused = [line for line in lines if line["logger"] == "plugway.request" and line["status"] == 401]
    assert refused and refused[0]["route"] == "/v1/models"
    for secret in (key, UPSTREAM_KEY, SECRET_WORDS, "passport", "nothing secret"):
        assert secret not in stderr


def test_debug_content_puts_the_conversation_in_the_line(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream, logging={"format": "json", "debug_content": True})
    key = mint(tmp_path, config)
    url, process = serve(config)
    upstream.enqueue(Reply(text="debug answer"))
    openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "debug question"}]
    )
    stderr = stop(process)
    (request,) = [json.loads(line) for line in stderr.splitlines() if '"plugway.request"' in line and '"/v1/chat/completions"' in line]
    assert request["content"]["messages"] == [{"role": "user", "content": "debug question"}]
    assert request["content"]["answer"]["content"] == "debug answer"
    assert key not in stderr


def test_metrics_add_up_over_worker_processes(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream)
    key = mint(tmp_path, config)
    url, _ = serve(config, "--workers", "2")
    upstream.responder = lambda body: Reply(text="ok")
    for _ in range(12):
        # A fresh connection each time, so that both processes get some of them.
        httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"Authorization": f"Bearer {key}", "Connection": "close"}, timeout=10).raise_for_status()
    for _ in range(4):  # whichever process answers the scrape, it reports everyone's requests
        series = scrape(url)
        assert value(series, "plugway_requests_total", route="/v1/chat/completions", organisation="acme", model="gpt-test", provider="upstream", status="200") == 12
        assert value(series, "plugway_tokens_total", organisation="acme", model="gpt-test", provider="upstream", type="input") == 12 * 11


def request_lines(stderr: str) -> list[dict[str, Any]]:
    return [line for line in (json.loads(text) for text in stderr.splitlines() if text.startswith("{")) if line["logger"] == "plugway.request"]


def test_json_lines_say_why_a_request_failed_and_whose_it_was(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream, logging={"format": "json"})
    key = mint(tmp_path, config)
    url, process = serve(config)
    headers = {"Authorization": f"Bearer {key}"}
    upstream.enqueue(Reply(text="fine"))
    assert httpx.post(f"{url}/v1/chat/completions", headers=headers | {"X-Request-Id": "ok-1"}, timeout=10,
                      json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    bad_input = httpx.post(f"{url}/v1/responses", headers=headers | {"X-Request-Id": "bad-input"}, timeout=10, json={"model": "gpt-test", "input": 5})
    assert bad_input.status_code == 400, bad_input.text
    unknown = httpx.post(f"{url}/v1/chat/completions", headers=headers | {"X-Request-Id": "no-model"}, timeout=10,
                         json={"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404
    stranger = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer pw_unknown_key_000000000000", "X-Request-Id": "no-key"},
                          json={"model": "gpt-test", "messages": []}, timeout=10)
    assert stranger.status_code == 401
    lines = {line["request_id"]: line for line in request_lines(stop(process))}
    assert lines["ok-1"]["outcome"] == "ok" and lines["ok-1"]["error_code"] is None
    failed = lines["bad-input"]
    assert failed["route"] == "/v1/responses" and failed["status"] == 400
    assert (failed["outcome"], failed["error_code"], failed["param"]) == ("invalid_request_error", "invalid_request_error", bad_input.json()["error"]["param"])
    assert failed["param"] and failed["organisation"] == "acme" and failed["key_id"]
    assert (lines["no-model"]["outcome"], lines["no-model"]["param"], lines["no-model"]["organisation"]) == ("model_not_found", "model", "acme")
    # An unknown key belongs to no organisation.
    assert (lines["no-key"]["outcome"], lines["no-key"]["organisation"]) == ("invalid_api_key", None)


def test_text_request_lines_carry_the_error_code_and_field(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream, logging={"requests": True})
    key = mint(tmp_path, config)
    url, process = serve(config)
    refused = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "text-404"}, timeout=10,
                         json={"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 404
    (line,) = [line for line in stop(process).splitlines() if "text-404" in line]
    assert "POST /v1/chat/completions 404 error=model_not_found param=model org=acme" in line


def test_mcp_is_its_own_route_in_lines_and_metrics(tmp_path: Path, upstream: FakeOpenAI, serve: Any) -> None:
    config = write_config(tmp_path, upstream, logging={"format": "json"})
    key = mint(tmp_path, config)
    url, process = serve(config)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {key}"}
    assert httpx.post(f"{url}/mcp", json=initialize, headers=accept, timeout=10).status_code == 200
    assert httpx.post(f"{url}/mcp", json=initialize, timeout=10).status_code == 401
    assert httpx.get(f"{url}/no/such/route", timeout=10).status_code == 404
    series = scrape(url)
    assert value(series, "plugway_requests_total", route="/mcp", organisation="acme", model="", provider="", status="200") == 1
    assert value(series, "plugway_requests_total", route="/mcp", organisation="", model="", provider="", status="401") == 1
    lines = request_lines(stop(process))
    assert {(line["route"], line["status"]) for line in lines} >= {("/mcp", 200), ("/mcp", 401), ("unmatched", 404)}
