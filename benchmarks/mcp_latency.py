"""Warm MCP tool-call latency through plugway's McpManager, against the SDK's own client.

For each transport (stdio, streamable HTTP) it calls the test server's ``echo``
tool N times sequentially, first through a bare ``mcp.Client`` (the direct
call), then through ``McpManager`` (what the gateway does: owner task, result
rendering, size cap), and prints p50/p99 and the ratio.

    .venv/bin/python benchmarks/mcp_latency.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from runtime.config import PluginRef  # noqa: E402
from runtime.mcp import McpManager  # noqa: E402
from tests.fakes.openai_server import free_port  # noqa: E402

SERVER = str(ROOT / "tests" / "fixtures" / "mcp_test_server.py")


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def direct(client_source: object, calls: int) -> list[float]:
    async with Client(client_source) as client:  # type: ignore[arg-type]
        for _ in range(20):
            await client.call_tool("echo", {"text": "warm"})
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            await client.call_tool("echo", {"text": f"hello {i}"})
            latencies.append(time.perf_counter() - started)
        return latencies


async def managed(ref: PluginRef, calls: int) -> list[float]:
    manager = McpManager()
    await manager.start([ref])
    try:
        for _ in range(20):
            await manager.call(ref, "echo", {"text": "warm"})
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            await manager.call(ref, "echo", {"text": f"hello {i}"})
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await manager.aclose()


def start_http_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, SERVER, "--transport", "streamable-http", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    for _ in range(100):
        try:
            httpx.get(url, timeout=0.3)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return server, url


async def main(calls: int, url: str) -> None:
    results: dict[str, tuple[list[float], list[float]]] = {}
    stdio_ref = PluginRef.model_validate({"id": "bench", "mcp": {"command": [sys.executable, SERVER]}})
    results["stdio"] = (
        await direct(StdioServerParameters(command=sys.executable, args=[SERVER]), calls),
        await managed(stdio_ref, calls),
    )
    http_ref = PluginRef.model_validate({"id": "bench", "mcp": {"url": url}})
    results["http"] = (await direct(streamable_http_client(url), calls), await managed(http_ref, calls))
    print(f"{calls} sequential warm calls of the test server's echo tool")
    print(f"{'transport':<10}{'direct p50':>12}{'direct p99':>12}{'plugway p50':>13}{'plugway p99':>13}{'p50 ratio':>11}")
    for name, (bare, ours) in results.items():
        b50, b99 = quantiles(bare)
        o50, o99 = quantiles(ours)
        print(f"{name:<10}{b50:>10.2f}ms{b99:>10.2f}ms{o50:>11.2f}ms{o99:>11.2f}ms{o50 / b50:>11.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    http_server, http_url = start_http_server()
    try:
        asyncio.run(main(parser.parse_args().calls, http_url))
    finally:
        http_server.terminate()
        http_server.wait(timeout=10)
