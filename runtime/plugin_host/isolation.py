"""Run CPU-bound tool work in a killable worker process, so no tool blocks the event loop.

Why a process. ``tool_timeout_s`` is enforced by cancelling the coroutine that
awaits a tool. Work running *on* the event loop cannot be interrupted at all
(nothing else runs until it returns, ``/healthz`` included), and work in a
thread carries on after its awaiting coroutine is cancelled: Python cannot stop
a thread, so a runaway pure-Python computation would keep a core and the GIL
for as long as it likes. A process can be killed. So first-party CPU-bound work
(the calculator's evaluator, the http plugin's HTML-to-text conversion) runs
through :func:`run_isolated`, and plugin authors may use it the same way.

The mechanism:

- One process-wide pool of worker processes (pebble's ``ProcessPool``), started
  on first use in a helper thread, so the loop never waits for processes to start.
- ``await run_isolated(fn, *args)`` hands the function and its arguments to an
  idle worker and awaits the result through an asyncio future. When the awaiting
  coroutine is cancelled (``tool_timeout_s`` expired, the client went away), the
  pool's future is cancelled and pebble's pool manager terminates the worker
  running it (SIGTERM, then SIGKILL after 3 s; within about 0.1 s) and starts a
  replacement. The cancelled coroutine returns at once; nothing waits on the kill.
- ``timeout_s`` is the pool's own limit for one run, for callers that have no
  outer timeout; when it expires the worker is killed the same way and a
  :class:`ToolError` says so.
- Workers are forked from multiprocessing's ``forkserver``: a small
  single-threaded process that imported ``runtime`` once. Forking the gateway
  itself, which runs threads, could hand a child a lock some other thread held;
  ``spawn`` would pay a fresh interpreter start for every replacement worker.
  Unlike multiprocessing's default, a worker does not re-run the gateway's main
  script: it only ever runs functions imported by module name.
- Each worker's address space is capped (``memory_limit_bytes``, 1 GiB by
  default): a runaway allocation ends as a MemoryError in the worker, reported
  as a ToolError, not as the gateway's memory growing.
- Workers never outlive the gateway, even one killed with SIGKILL: on Linux the
  kernel kills a worker when its parent, the forkserver, exits
  (``PR_SET_PDEATHSIG``), and the forkserver exits with the gateway (each worker
  closes its inherited copy of the pipe that keeps the forkserver alive);
  elsewhere a watchdog thread in each worker polls the gateway's pid. On a
  normal exit pebble's ``atexit`` hook stops them; :func:`shutdown_isolation`
  does it explicitly (call it from a lifespan's shutdown, in a thread).

What it costs, measured on two cores: about 0.6 ms per call made one at a time
(0.2 ms each when calls overlap), against some 30 µs for a calculator
expression evaluated inline: pickling, two pipe hops and pebble's dispatcher
threads. Two to four idle workers (one per core, at least two) of about 25 MB
resident each, mostly pages shared with the forkserver; the forkserver; three
pebble threads. The first run starts everything, about half a second in a
helper thread (:meth:`ProcessIsolation.start` at start-up takes that off the
first call). Replacing a killed worker is a fork from the forkserver, a few
milliseconds of a pebble thread's time, never the loop's. When every worker is
busy, runs queue, and the wait counts against the caller's timeout.

What may run here: a function importable by module and name (defined at the top
level of a module: not a lambda, a closure or a method of a local object), with
picklable arguments and result, that needs nothing from the gateway process.
Exceptions it raises, ToolError included, come back as they are::

    from runtime.plugin_host.isolation import run_isolated

    def _solve(puzzle: str) -> str: ...            # pure CPU work, module level

    async def solve(puzzle: str) -> str:   # the tool the plugin registers
        return await run_isolated(_solve, puzzle, timeout_s=10)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any, TypeVar, cast

from pebble import ProcessExpired, ProcessPool

from runtime.plugin_host.tool import ToolError

T = TypeVar("T")

DEFAULT_WORKERS = max(2, min(4, os.cpu_count() or 2))
DEFAULT_MEMORY_LIMIT_BYTES = 1 << 30
# Modules every worker needs, imported once by the forkserver instead of by each worker.
_FORKSERVER_PRELOAD = ["runtime", "runtime.plugin_host.isolation"]
_PR_SET_PDEATHSIG = 1
_WATCHDOG_INTERVAL_S = 0.5
_SHUTTING_DOWN = "the gateway is shutting down; the computation was stopped"


class ProcessIsolation:
    """A pool of killable worker processes; see the module docstring for the mechanism."""

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.memory_limit_bytes = memory_limit_bytes
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight: set[concurrent.futures.Future[Any]] = set()

    def start(self) -> None:
        """Start the workers now (blocking, so call it in a thread) rather than on the first run."""
        self._running_pool()

    async def run(self, function: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run ``function(*args)`` in a worker; cancelling the caller kills the worker."""
        pool = self._pool
        if pool is None or not pool.active:
            pool = await asyncio.to_thread(self._running_pool)
        try:
            future = pool.schedule(function, args=args, timeout=timeout_s)
        except RuntimeError:
            # The pool broke between the check and the call (its manager saw every worker die).
            pool = await asyncio.to_thread(self._running_pool)
            future = pool.schedule(function, args=args, timeout=timeout_s)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        try:
            return cast(T, await asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.cancel()  # pebble's pool manager terminates the worker running it
            raise
        except concurrent.futures.TimeoutError as exc:
            if timeout_s is None or exc.args[:1] != ("Task timeout",):
                raise  # the function's own TimeoutError, not the pool's limit
            raise ToolError(f"the computation was stopped after {timeout_s:g} s") from None
        except ProcessExpired as exc:
            raise ToolError(f"the computation's worker process ended abnormally (exit code {exc.exitcode})") from None
        except MemoryError:
            limit = f" ({self.memory_limit_bytes // (1 << 20)} MB)" if self.memory_limit_bytes else ""
            raise ToolError(f"the computation needed more memory than it may use{limit}") from None
        except concurrent.futures.BrokenExecutor:
            if self._closed:
                raise ToolError(_SHUTTING_DOWN) from None
            raise ToolError("the isolated worker pool failed; try again") from None

    def close(self) -> None:
        """Stop every worker now; runs still pending end in a ToolError. Blocks for up to a few seconds."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)
        # pebble abandons the futures of work it never finished: answer their callers.
        for future in list(self._in_flight):
            try:
                future.set_exception(ToolError(_SHUTTING_DOWN))
            except concurrent.futures.InvalidStateError:
                pass  # finished or cancelled meanwhile

    def _running_pool(self) -> ProcessPool:
        # Blocking (it may start processes): always called in a helper thread.
        with self._lock:
            if self._closed:
                raise RuntimeError("process isolation has been shut down")
            if self._pool is not None and self._pool.active:
                return self._pool
            if self._pool is not None:
                _stop(self._pool)
            pool = ProcessPool(
                max_workers=self.workers,
                initializer=_prepare_worker,
                initargs=(os.getpid(), self.memory_limit_bytes),
                context=_start_context(),
            )
            if not pool.active:  # reading ``active`` starts the workers, here rather than on the loop
                raise RuntimeError("the isolated worker pool did not start")
            self._pool = pool
            return pool


def _stop(pool: ProcessPool) -> None:
    pool.stop()
    pool.join()


def _start_context() -> BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = _ForkServerWithoutMain()
        # Takes effect when the forkserver starts (our first pool); later calls change nothing.
        context.set_forkserver_preload(_FORKSERVER_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


if sys.platform != "win32":
    from multiprocessing import context as _mp_context
    from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util

    class _PopenWithoutMain(popen_forkserver.Popen):
        """The forkserver's Popen, except that the worker does not re-import ``__main__``.

        multiprocessing re-runs the parent's main script in every child so that
        functions defined there can be unpickled. Workers here run only functions
        imported by module name, so they never need it, and re-running it would
        start an unguarded script again in each worker (or fail outright for a
        main read from stdin, sending pebble into a loop of dying workers).
        ``_launch`` is the standard library's, with the two main-module keys dropped.
        """

        def _launch(self, process_obj: Any) -> None:
            prep_data = spawn.get_preparation_data(process_obj._name)
            prep_data.pop("init_main_from_path", None)
            prep_data.pop("init_main_from_name", None)
            buffer = io.BytesIO()
            _mp_context.set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buffer)
                reduction.dump(process_obj, buffer)
            finally:
                _mp_context.set_spawning_popen(None)
            self.sentinel, data_pipe = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
            # A duplicate of the data pipe's write end is the child's sentinel of its parent.
            parent_end = os.dup(data_pipe)
            self.finalizer = util.Finalize(self, util.close_fds, (parent_end, self.sentinel))  # type: ignore[attr-defined]
            with open(data_pipe, "wb", closefd=True) as pipe:
                pipe.write(buffer.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    class _ProcessWithoutMain(_mp_context.ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> _PopenWithoutMain:
            return _PopenWithoutMain(process_obj)

    class _ForkServerWithoutMain(_mp_context.ForkServerContext):
        Process = _ProcessWithoutMain


def _prepare_worker(owner_pid: int, memory_limit_bytes: int | None) -> None:
    """Pebble's worker initializer: cap memory, and make sure the worker dies with the gateway."""
    if memory_limit_bytes is not None and sys.platform != "win32":
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_limit_bytes if hard == resource.RLIM_INFINITY else min(hard, memory_limit_bytes)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if not _die_with_forkserver():
        threading.Thread(target=_exit_when_gone, args=(owner_pid,), daemon=True).start()
    if not _alive(owner_pid):  # the gateway died while this worker was starting
        os._exit(0)


def _die_with_forkserver() -> bool:
    """On Linux, have the kernel kill this worker when the forkserver (so the gateway) exits."""
    if sys.platform != "linux":
        return False
    from multiprocessing import forkserver

    server = forkserver._forkserver  # type: ignore[attr-defined]
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is None:  # not forked by a forkserver
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return False
    # The forkserver exits when every copy of the gateway's end of its "alive" pipe is
    # closed, and each forkserver child inherits one: while this worker kept its copy,
    # a killed gateway would leave the forkserver, and so this worker, running.
    # Closed only now that the death signal is armed, so no exit can slip between.
    os.close(alive_fd)
    server._forkserver_alive_fd = None  # type: ignore[attr-defined]
    return True


def _exit_when_gone(owner_pid: int) -> None:
    while _alive(owner_pid):
        time.sleep(_WATCHDOG_INTERVAL_S)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_default: ProcessIsolation | None = None
_default_lock = threading.Lock()


def default_isolation() -> ProcessIsolation:
    """The process-wide pool behind :func:`run_isolated`, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ProcessIsolation()
        return _default


async def run_isolated(function: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
    """Run ``function(*args)`` in a killable worker process and return its result.

    Cancelling the awaiting coroutine (for example when ``tool_timeout_s``
    expires) kills the worker; ``timeout_s`` is the pool's own limit on the run.
    """
    return await default_isolation().run(function, *args, timeout_s=timeout_s)


def shutdown_isolation() -> None:
    """Stop the process-wide pool's workers (blocking); the next run starts a new pool."""
    global _default
    with _default_lock:
        isolation, _default = _default, None
    if isolation is not None:
        isolation.close()
