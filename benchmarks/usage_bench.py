"""Cost of billing on the hot path: the budget check, and the usage writer's flush.

    .venv/bin/python benchmarks/usage_bench.py [DATABASE_URL]

Prints the budget check's latency with a warm cache (what every request pays)
and with a cold one (once per organisation every ``ttl_s``), and how fast the
usage writer stores batches of records.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from runtime.billing import BudgetGuard
from runtime.config import OrganisationConfig
from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from runtime.storage.usage import UsageWriter


def _pct(samples: list[float], q: float) -> float:
    return sorted(samples)[int(q * (len(samples) - 1))] * 1e6


async def main(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    writer = UsageWriter(engine)
    org = OrganisationConfig(id="bench", monthly_budget_usd=1e9)

    guard = BudgetGuard(engine, writer, ttl_s=3600)
    await guard.check(org)
    warm = []
    for _ in range(20_000):
        started = time.perf_counter()
        await guard.check(org)
        warm.append(time.perf_counter() - started)
    cold = []
    for _ in range(200):
        guard = BudgetGuard(engine, writer, ttl_s=0)
        started = time.perf_counter()
        await guard.check(org)
        cold.append(time.perf_counter() - started)
    print(f"budget check, warm cache: p50 {_pct(warm, .5):.1f} us, p99 {_pct(warm, .99):.1f} us")
    print(f"budget check, cold (DB read): p50 {_pct(cold, .5):.0f} us, p99 {_pct(cold, .99):.0f} us")

    for batch in (1, 100, 500):
        rounds = max(5, 2000 // batch)
        started = time.perf_counter()
        for _ in range(rounds):
            for i in range(batch):
                writer.record(request_id=f"r{i}", organisation_id="bench", model="m", total_tokens=10, cost_usd=1e-6)
            await writer.flush()
        elapsed = time.perf_counter() - started
        print(f"usage flush, batches of {batch}: {rounds * batch / elapsed:,.0f} records/s ({elapsed / rounds * 1000:.2f} ms a batch)")
    await writer.aclose()
    engine.dispose()


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    asyncio.run(main(target))
