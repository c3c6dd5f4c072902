"""Memory bounds, measured: RSS while upstreams misbehave, and what a buffered usage row costs.

    .venv/bin/python benchmarks/memory_bounds.py [--concurrency 8]

Runs a real gateway (in this process, as the tests do) against a raw TCP upstream that
sends endless bodies or endless SSE lines (``tests/fakes/misbehaving_upstream.py``), with
the default bounds (``max_response_bytes`` 32 MiB, ``max_event_bytes`` 1 MiB), and prints
this process's RSS before, at its peak (sampled every 10 ms) and after. Then it records
100,000 usage rows into a usage writer that never flushes (the database down) and prints
their size. The README's "Security and limits" quotes these figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.storage.engine import make_engine  # noqa: E402
from runtime.storage.usage import UsageWriter  # noqa: E402
from tests.fakes.misbehaving_upstream import (  # noqa: E402
    Behaviour,
    MisbehavingUpstream,
    endless_json_body,
    endless_line_stream,
)
from tests.support import GatewayServer, make_settings  # noqa: E402

MIB = 1024 * 1024


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """The highest RSS seen while the block runs, sampled every 10 ms."""

    def __enter__(self) -> PeakRss:
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def misbehaving(directory: Path, behaviour: Behaviour, *, stream: bool, concurrency: int) -> None:
    upstream = MisbehavingUpstream(behaviour).start()
    provider = {"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test", "max_retries": 0, "breaker_failures": 1000}
    server = GatewayServer(make_settings(directory, upstream.base_url, providers=[provider])).start()
    key = server.mint("bare")
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "stream": stream}

    def one(_: int) -> int:
        with httpx.stream(
            "POST", f"{server.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as response:
            return sum(len(chunk) for chunk in response.iter_bytes()) + response.status_code * 0

    try:
        one(0)  # warm-up: imports, connection pools
        before = rss_mib()
        with PeakRss() as peak, ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(concurrency)))
        after = rss_mib()
    finally:
        server.stop()
        upstream.stop()
    kind = "endless SSE line" if stream else "endless JSON body"
    print(f"{concurrency} concurrent requests, {kind}: RSS {before:.0f} MiB before, {peak.peak:.0f} MiB peak, {after:.0f} MiB after")


def usage_rows(directory: Path, rows: int = 100_000) -> None:
    writer = UsageWriter(make_engine(f"sqlite:///{directory / 'rows.db'}"))
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(rows):
        writer.record(
            request_id=f"req_{i:024d}", organisation_id="acme", key_id="key_0123456789abcdef", source="api", endpoint=None,
            model="gpt-4o-mini", requested_model=None, provider="openai", prompt_tokens=1200, completion_tokens=300,
            total_tokens=1500, cost_usd=0.00042, rounds=1, tool_calls=0, latency_ms=812.5, status="ok",
        )
    used = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    print(f"{rows:,} usage rows buffered (database down): {used / MIB:.0f} MiB, {used / rows:.0f} bytes a row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        misbehaving(directory, endless_json_body(), stream=False, concurrency=args.concurrency)
        misbehaving(directory, endless_line_stream(after_chunks=2), stream=True, concurrency=args.concurrency)
        usage_rows(directory)


if __name__ == "__main__":
    main()
