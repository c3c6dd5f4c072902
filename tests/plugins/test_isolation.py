"""Killable worker processes for CPU-bound tool work (runtime.plugin_host.isolation)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime import ToolError
from runtime.plugin_host.isolation import ProcessIsolation, run_isolated
from tests.plugins import isolation_targets as targets

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads process states from /proc")

REPOSITORY = Path(__file__).resolve().parents[2]


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and is neither a zombie nor dead (an unreaped orphan counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def announced_pid(pid_file: Path) -> int:
    assert wait_until(lambda: pid_file.exists() and bool(pid_file.read_text()), 10), "the worker never started the job"
    return int(pid_file.read_text())


async def pid_from(pid_file: Path) -> int:
    return await asyncio.to_thread(announced_pid, pid_file)


@pytest.fixture
async def isolation() -> AsyncIterator[ProcessIsolation]:
    pool = ProcessIsolation(workers=1)
    await asyncio.to_thread(pool.start)
    yield pool
    await asyncio.to_thread(pool.close)


async def test_results_and_tool_errors_come_back(isolation: ProcessIsolation) -> None:
    assert await isolation.run(targets.add, 2, 3) == 5
    assert await isolation.run(targets.worker_pid) != os.getpid()
    with pytest.raises(ToolError, match="no such city"):
        await isolation.run(targets.refuse, "no such city")


async def test_cancelling_the_caller_kills_a_runaway_worker(isolation: ProcessIsolation, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job = asyncio.ensure_future(isolation.run(targets.spin_forever, str(pid_file)))
    worker = await pid_from(pid_file)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):  # what run_tool_call does with tool_timeout_s
            await job
    assert time.monotonic() - started < 1.5  # the caller is answered at once; the kill follows
    assert await asyncio.to_thread(wait_until, lambda: not process_running(worker), 5), "the runaway worker is still running"
    # The pool replaced the worker and serves the next call.
    assert await isolation.run(targets.add, 1, 1) == 2
    assert await isolation.run(targets.worker_pid) != worker


async def test_the_pools_own_timeout_kills_the_worker(isolation: ProcessIsolation, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(ToolError, match="stopped after 0.5 s"):
        await isolation.run(targets.spin_forever, str(pid_file), timeout_s=0.5)
    worker = await pid_from(pid_file)
    assert await asyncio.to_thread(wait_until, lambda: not process_running(worker), 5)


async def test_a_timeout_error_of_the_function_itself_is_not_the_pools_limit(isolation: ProcessIsolation) -> None:
    with pytest.raises(TimeoutError, match="did not answer"):
        await isolation.run(targets.time_out, timeout_s=5)


async def test_the_event_loop_keeps_running_while_a_worker_spins(isolation: ProcessIsolation, tmp_path: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    with pytest.raises(ToolError):
        await isolation.run(targets.spin_forever, str(tmp_path / "pid"), timeout_s=1)
    ticking.cancel()
    assert ticks > 20  # ~100 if the loop ran freely; 1 if the computation had held it


async def test_memory_is_capped_per_worker(tmp_path: Path) -> None:
    small = ProcessIsolation(workers=1, memory_limit_bytes=256 << 20)
    try:
        with pytest.raises(ToolError, match="more memory"):
            await small.run(targets.allocate, 512 << 20)
        assert await small.run(targets.allocate, 1 << 20) == 1 << 20
    finally:
        await asyncio.to_thread(small.close)


async def test_a_crashing_worker_is_a_tool_error_and_is_replaced(isolation: ProcessIsolation) -> None:
    with pytest.raises(ToolError, match="ended abnormally"):
        await isolation.run(targets.die, 3)
    assert await isolation.run(targets.add, 20, 22) == 42


async def test_close_stops_every_worker_and_answers_pending_runs(tmp_path: Path) -> None:
    pool = ProcessIsolation(workers=2)
    await asyncio.to_thread(pool.start)
    idle = await pool.run(targets.worker_pid)
    pid_file = tmp_path / "pid"
    pending = asyncio.ensure_future(pool.run(targets.spin_forever, str(pid_file)))
    busy = await pid_from(pid_file)
    await asyncio.to_thread(pool.close)
    with pytest.raises(ToolError, match="shutting down"):
        await asyncio.wait_for(pending, 5)
    assert not process_running(idle) and not process_running(busy)
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run(targets.add, 1, 2)


async def test_the_shared_pool_runs_calls_concurrently() -> None:
    results = await asyncio.gather(*(run_isolated(targets.add, n, n) for n in range(20)))
    assert results == [2 * n for n in range(20)]


_OWNER = """
import asyncio, sys
from runtime.plugin_host.isolation import ProcessIsolation
from tests.plugins.isolation_targets import spin_forever

async def main() -> None:
    await ProcessIsolation(workers=1).run(spin_forever, sys.argv[1])

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_die_with_a_killed_gateway(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(pid_file)], cwd=REPOSITORY)
    try:
        worker = announced_pid(pid_file)
        assert process_running(worker)
        owner.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel and the forkserver act
        owner.wait(10)
        assert wait_until(lambda: not process_running(worker), 10), "a busy worker outlived its gateway"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


_UNGUARDED_MAIN = """
import asyncio
import os

from runtime.plugin_host.isolation import run_isolated

print("main ran", flush=True)
print("worker ran", asyncio.run(run_isolated(os.getpid)) != os.getpid(), flush=True)
"""


def test_workers_never_re_run_the_gateways_main_script(tmp_path: Path) -> None:
    # multiprocessing's default would run this unguarded script again in every worker.
    script = tmp_path / "serve.py"
    script.write_text(_UNGUARDED_MAIN)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["main ran", "worker ran True"]
