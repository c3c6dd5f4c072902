"""How much latency the rate limiter adds, measured against a bare Redis PING.

    .venv/bin/python benchmarks/limiter_bench.py [--redis-url URL] [--requests N] [--concurrency C]

A PING is the floor for any one-round-trip check, so ``acquire / PING`` shows
what the Lua script and our Python around it cost on top of the network.
Calls are interleaved (PING, acquire, record, PING, ...) so that noise from
other processes on the machine hits every series alike. Keys live under a
random prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from runtime.limits import InProcessLimiter, RedisLimiter

Call = Callable[[], Awaitable[object]]


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


async def timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def sequential(series: dict[str, Call], requests: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in series}
    for _ in range(requests):
        for name, call in series.items():
            samples[name].append(await timed(call))
    return samples


async def throughput(call: Call, requests: int, concurrency: int) -> float:
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


def report(samples: dict[str, list[float]], baseline: str) -> None:
    base_p50 = percentile(samples[baseline], 50)
    base_p99 = percentile(samples[baseline], 99)
    print(
        f"{'series':<24}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'p50 ×PING':>11}{'p99 ×PING':>11}"
    )
    for name, values in samples.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(
            f"{name:<24}{p50 * 1e6:>10.0f}{p99 * 1e6:>10.0f}{statistics.fmean(values) * 1e6:>10.0f}"
            f"{p50 / base_p50:>11.2f}{p99 / base_p99:>11.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PLUGWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    prefix = f"plugway-bench:{uuid.uuid4().hex[:8]}:"
    # A generous timeout: the benchmark measures latency, it must not turn slow calls into errors.
    limiter = RedisLimiter(args.redis_url, timeout_s=5.0, key_prefix=prefix)
    in_process = InProcessLimiter()
    redis = Redis.from_url(args.redis_url)
    # Limits high enough never to refuse: refusals would skip the write path.
    huge = 10**12

    series: dict[str, Call] = {
        "PING (baseline)": redis.ping,
        "acquire rpm+tokens": lambda: limiter.acquire("bench", rpm=huge, daily_tokens=huge),
        "acquire rpm only": lambda: limiter.acquire("bench-rpm", rpm=huge, daily_tokens=None),
        "record_tokens": lambda: limiter.record_tokens("bench", 100),
        "in-process acquire": lambda: in_process.acquire("bench", rpm=huge, daily_tokens=huge),
    }
    try:
        await sequential(series, 200)  # warm-up: connections, script cache
        samples = await sequential(series, args.requests)
        print(f"sequential, {args.requests} calls per series, {args.redis_url}")
        report(samples, "PING (baseline)")
        added = percentile(samples["acquire rpm+tokens"], 50) - percentile(
            samples["PING (baseline)"], 50
        )
        print(f"limiter cost over one bare round trip (p50): {added * 1e6:.0f} µs")

        print(f"\nconcurrent, {args.concurrency} tasks, {args.requests} calls")
        ping_rate = await throughput(redis.ping, args.requests, args.concurrency)
        acquire_rate = await throughput(
            series["acquire rpm+tokens"], args.requests, args.concurrency
        )
        print(f"PING     {ping_rate:>9.0f} /s")
        print(f"acquire  {acquire_rate:>9.0f} /s  ({acquire_rate / ping_rate:.2f} × PING)")
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await limiter.aclose()


if __name__ == "__main__":
    asyncio.run(main())
