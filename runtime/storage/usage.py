"""Usage records, written off the hot path.

``record()`` only appends to an in-memory buffer; a background task writes the
buffer in one transaction every ``flush_interval_s`` (or sooner when it holds
``max_batch`` records) in a worker thread. Shutdown flushes what is left, so a
clean stop loses nothing; a crash (SIGKILL, power loss) loses at most the
records of the last ``flush_interval_s`` (0.5 s by default), and while the
database is down the buffer keeps growing and is retried every interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlmodel import Session

from runtime.config import Price
from runtime.storage.models import UsageRecord

log = logging.getLogger("plugway.usage")
T = TypeVar("T")


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1_000_000


class UsageWriter:
    def __init__(self, engine: Engine, *, flush_interval_s: float = 0.5, max_batch: int = 500) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self._buffer: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="plugway-usage-writer")

    def record(self, record: UsageRecord) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def read_after_flush(self, read: Callable[[], T], *, flushed: Callable[[], None] | None = None) -> T:
        """Write everything buffered, call ``flushed()``, then run ``read`` in a thread with no flush in between.

        So ``read`` sees exactly the records recorded before ``flushed()`` ran
        (plus other processes' records): the budget guard relies on it to
        never count a record twice.
        """
        async with self._lock:
            await self._flush_locked()
            if flushed is not None:
                flushed()
            return await anyio.to_thread.run_sync(read)

    async def _flush_locked(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                await anyio.to_thread.run_sync(self._write, batch)
            except Exception:
                log.exception("writing %d usage records failed; will retry", len(batch))
                self._buffer[:0] = batch
                raise

    def _write(self, batch: list[UsageRecord]) -> None:
        with Session(self.engine) as session:
            session.add_all(batch)
            session.commit()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                await asyncio.sleep(self.flush_interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
