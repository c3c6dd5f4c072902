"""Gateway overhead against a direct upstream call, measured in the same run.

Starts a fake OpenAI upstream and a real `plugway serve` (separate processes),
then drives the same load (N requests, C concurrent, httpx) three ways:

  direct        client -> upstream
  passthrough   client -> plugway -> upstream            (org without plugins)
  orchestrated  client -> plugway -> upstream, tool, upstream   (one calculator round)

and prints requests/s, p50 and p99 latency, and each ratio to direct.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import free_port  # noqa: E402

BODY = {"model": "gpt-bench", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def drive(url: str, headers: dict[str, str], body: dict, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        # The whole body is read either way: for a stream, that is every SSE event.
        for _ in range(min(50, requests)):  # warm-up
            (await client.post(url, json=body, headers=headers)).raise_for_status()
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                response = await client.post(url, json=body, headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream", action="store_true", help="stream every answer (SSE) instead")
    args = parser.parse_args()

    upstream_port, gateway_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="plugway-bench-"))
    config = workdir / "plugway.yaml"
    config.write_text(
        f"""
database_url: sqlite:///{workdir}/bench.db
providers: [{{id: up, kind: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", api_key: sk-test-upstream, max_retries: 0}}]
models: [{{id: gpt-bench, provider: up}}]
organisations:
  - {{id: plain}}
  - {{id: tools, plugins: [{{id: calculator}}]}}
usage: {{flush_interval_s: 0.5}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", str(upstream_port), "--tool", "calculator__evaluate", "--arguments", '{"expression": "6*7"}'], cwd=ROOT, env=env),
    ]
    try:
        keys = {}
        for org in ("plain", "tools"):
            out = subprocess.run([sys.executable, "-m", "runtime.cli", "keys", "create", "--org", org, "--config", str(config)], capture_output=True, text=True, env=env, check=True)
            keys[org] = out.stdout.strip().splitlines()[-1]
        processes.append(subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--config", str(config), "--port", str(gateway_port), "--no-worker"], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_ready(f"http://127.0.0.1:{upstream_port}/v1/chat/completions")
        wait_ready(f"http://127.0.0.1:{gateway_port}/healthz")

        upstream_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        runs = {
            "direct": (upstream_url, {"Authorization": "Bearer sk-test-upstream"}),
            "passthrough": (gateway_url, {"Authorization": f"Bearer {keys['plain']}"}),
            "orchestrated": (gateway_url, {"Authorization": f"Bearer {keys['tools']}"}),
        }
        upstream_pid, gateway_pid = processes[0].pid, processes[1].pid
        results = {}
        cpu: dict[str, tuple[float, float]] = {}
        for name, (url, headers) in runs.items():
            before = cpu_seconds(upstream_pid), cpu_seconds(gateway_pid)
            body = {**BODY, "stream": True, "stream_options": {"include_usage": True}} if args.stream else BODY
            results[name] = asyncio.run(drive(url, headers, body, args.requests, args.concurrency))
            after = cpu_seconds(upstream_pid), cpu_seconds(gateway_pid)
            calls = args.requests + min(50, args.requests)
            cpu[name] = ((after[0] - before[0]) / calls * 1e6, (after[1] - before[1]) / calls * 1e6)
        direct_rps, direct_lat = results["direct"]
        print(f"{args.requests} {'streamed ' if args.stream else ''}requests, {args.concurrency} concurrent, {os.cpu_count()} cores (client, gateway and upstream share them)")
        print(f"{'path':<14}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'rps/direct':>12}{'p50/direct':>12}{'upstream CPU/req':>18}{'gateway CPU/req':>17}")
        for name, (rps, lat) in results.items():
            up, gw = cpu[name]
            print(f"{name:<14}{rps:>8.0f}{p(lat, 50):>9.2f}{p(lat, 99):>9.2f}{rps / direct_rps:>12.2f}{p(lat, 50) / p(direct_lat, 50):>12.2f}{up:>16.0f}us{gw:>15.0f}us")
        print("gateway CPU per request relative to the upstream's own (a minimal Python server):")
        for name in ("passthrough", "orchestrated"):
            up, gw = cpu[name]
            print(f"  {name}: {gw / cpu['direct'][0]:.2f}x")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
