"""Usage records, written off the hot path.

``record()`` only appends to an in-memory buffer; a background task writes it
in transactions of at most ``max_batch`` rows every ``flush_interval_s`` (or
sooner when ``max_batch`` rows are waiting), in a worker thread. A clean stop
writes what is left; a crash (SIGKILL, power loss) loses at most the records
of the last ``flush_interval_s`` (0.5 s by default).

Two kinds of failure, handled apart:

- **The database refuses a row** (a value no column can hold, such as an
  upstream's absurd token count): that row alone is set aside. Values that
  cannot fit are caught before the database sees them; anything else the
  database refuses is found by splitting the batch (a few extra statements,
  only when it happens). The row is logged with its request id, organisation
  and reason, appended to the spill file, and kept in memory so this
  process's budget checks still count its cost. Every other row is written:
  one bad row never holds back anyone else's.
- **The database cannot be written at all** (down, locked, table missing):
  the rows stay buffered and are retried every interval; the failure is
  logged when it starts, every minute while it lasts, and when writes resume.

``aclose()`` never raises: when the final write fails, the buffered rows are
appended to the spill file and an error says how many and where.

The spill file holds JSON Lines, one ``{"row", "reason", "at"}`` object a
line: ``<database file>-unwritten-usage.jsonl`` beside an SQLite database,
``./plugway-unwritten-usage.jsonl`` (the gateway's working directory) for
PostgreSQL. ``plugway usage replay [FILE]`` writes its rows to the database
and keeps in the file only those still refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import DateTime, Engine, Float, Integer, String, Table, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import SQLModel

from runtime.config import Price
from runtime.storage import models  # noqa: F401  (registers usage_records)
from runtime.storage.bulk import insert_rows
from runtime.storage.db import failure_reason, sqlite_file
from runtime.storage.models import INT64_MAX

log = logging.getLogger("plugway.usage")
T = TypeVar("T")
Row = dict[str, Any]

SPILL_SUFFIX = "-unwritten-usage.jsonl"
# While writes fail, say so again this often (not at every retry).
FAILURE_LOG_INTERVAL_S = 60.0
# Refused rows kept in memory for budget checks; older ones live on only in the spill file.
SET_ASIDE_KEPT = 10_000


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1_000_000


# Every row carries every column, so a batch is one executemany of one statement.
_ROW_DEFAULTS: dict[str, Any] = {
    "key_id": None,
    "source": "api",
    "endpoint": None,
    "requested_model": None,
    "provider": None,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "cost_usd": 0.0,
    "rounds": 0,
    "tool_calls": 0,
    "latency_ms": 0.0,
    "status": "ok",
}


def default_spill_path(engine: Engine) -> Path:
    """Where rows the database will not take are saved: beside an SQLite file, else the working directory."""
    database = sqlite_file(engine.url)
    if database is not None:
        return database.with_name(database.name + SPILL_SUFFIX)
    return Path.cwd() / f"plugway{SPILL_SUFFIX}"


class UsageNotWritten(Exception):
    """The database could not be written; the rows stay buffered and are retried."""


class _StoppedWriting(Exception):
    def __init__(self, unwritten: list[Row], refused: list[tuple[Row, str]]) -> None:
        super().__init__(f"{len(unwritten)} rows not written")
        self.unwritten = unwritten
        self.refused = refused


def _refuses_the_row(exc: BaseException) -> bool:
    """True when the database (or the driver) refused these values, not the write as such."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError):
        return False  # unreachable, locked, missing table...: retry the rows later
    return isinstance(exc, (StatementError, OverflowError, TypeError, ValueError))


def _python_type(column_type: TypeEngine[Any]) -> type:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    for sql_type, python_type in ((Integer, int), (Float, float), (String, str), (DateTime, datetime)):
        if isinstance(column_type, sql_type):
            return python_type
    return object


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class UsageRows:
    """Writing usage rows, synchronously: checks, inserts, and isolating the rows the database refuses."""

    def __init__(self, engine: Engine, spill_path: Path) -> None:
        self.engine = engine
        self.spill_path = spill_path
        self.table: Table = SQLModel.metadata.tables["usage_records"]
        self._kinds = {column.name: (_python_type(column.type), column.nullable) for column in self.table.columns if column.name != "id"}
        self._spill_lock = threading.Lock()

    def unstorable(self, row: Row) -> str | None:
        """Why no database could store ``row``, or None; a whole number sent as ``12.0`` is made ``12``."""
        for name, value in row.items():
            kind = self._kinds.get(name)
            if kind is None:
                return f"unknown column {name}"
            python_type, nullable = kind
            if value is None:
                if not nullable:
                    return f"{name} is missing"
            elif python_type is int:
                if isinstance(value, float) and value.is_integer():
                    value = row[name] = int(value)
                if not isinstance(value, int):
                    return f"{name}={_short(value)} is not a whole number"
                if not -INT64_MAX - 1 <= value <= INT64_MAX:
                    return f"{name}={value} does not fit a 64-bit integer"
            elif python_type is float:
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    return f"{name}={_short(value)} is not a finite number"
            elif not isinstance(value, python_type):
                return f"{name}={_short(value)} is not a {python_type.__name__}"
        return None

    def insert(self, rows: list[Row]) -> None:
        with self.engine.begin() as connection:
            insert_rows(connection, self.table, rows)

    def store(self, batch: list[Row], after_failure: bool = False) -> list[tuple[Row, str]]:
        """Write ``batch``; returns the rows refused, with why, after saving them to the spill file.

        Raises :class:`_StoppedWriting` (holding the rows not yet written) when
        the database cannot be written at all. ``after_failure``: an earlier write of
        some of these rows failed without saying whether it committed, so the rows the
        database already holds (by ``write_id``) are left out rather than written twice.
        """
        if after_failure:
            try:
                batch = self.not_yet_written(batch)
            except Exception as exc:
                raise _StoppedWriting(list(batch), []) from exc
        refused: list[tuple[Row, str]] = []
        storable: list[Row] = []
        for row in batch:
            why = self.unstorable(row)
            if why is None:
                storable.append(row)
            else:
                refused.append((row, why))
        parts = [storable] if storable else []
        try:
            while parts:
                part = parts.pop()
                try:
                    self.insert(part)
                except Exception as exc:
                    if not _refuses_the_row(exc):
                        raise _StoppedWriting([row for rows in (part, *parts) for row in rows], refused) from exc
                    if len(part) == 1:
                        refused.append((part[0], failure_reason(exc)))
                    else:
                        # Halves, until the refused rows stand alone: log2(batch) extra statements per bad row.
                        middle = len(part) // 2
                        parts += [part[middle:], part[:middle]]
        finally:
            if refused:
                self.spill(refused)
        return refused

    def not_yet_written(self, batch: list[Row]) -> list[Row]:
        """The rows of ``batch`` whose ``write_id`` the database does not hold."""
        ids = [row["write_id"] for row in batch if row.get("write_id")]
        if not ids:
            return batch
        column = self.table.c.write_id
        with self.engine.connect() as connection:
            held = {found for (found,) in connection.execute(select(column).where(column.in_(ids)))}
        if held:
            log.warning("%d usage records were written before the connection broke; they are not written twice", len(held))
        return [row for row in batch if row.get("write_id") not in held]

    def spill(self, entries: list[tuple[Row, str]]) -> bool:
        """Append rows to the spill file; if even that fails, put them in the log: never lose them silently."""
        at = datetime.now(UTC).isoformat()
        # repr() for anything JSON cannot hold: a row is saved even if a bug put an odd value in it.
        lines = [json.dumps({"row": _to_json(row), "reason": reason, "at": at}, default=repr) + "\n" for row, reason in entries]
        try:
            with self._spill_lock, open(self.spill_path, "a", encoding="utf-8") as file:
                file.writelines(lines)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            log.critical(
                "could not save %d usage records to %s (%s); here they are, one JSON object a line:\n%s",
                len(lines), self.spill_path, exc, "".join(lines),
            )
            return False
        return True


def _to_json(row: Row) -> Row:
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in row.items()}


def _from_json(row: Row) -> Row:
    created_at = row.get("created_at")
    if isinstance(created_at, str):
        row = {**row, "created_at": datetime.fromisoformat(created_at)}
    return row


async def flush_until_stopped(
    flush: Callable[[], Awaitable[None]], *, wake: asyncio.Event, stop: asyncio.Event, interval_s: float
) -> None:
    """A batching writer's background loop: ``flush`` every ``interval_s``, or at once when
    ``wake`` is set, until ``stop`` is. A failing flush (it logs its own failure) waits out an
    interval: a full buffer must not spin on a dead database."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval_s)
        wake.clear()
        if stop.is_set():
            return
        try:
            await flush()
        except Exception:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


class UsageWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval_s: float = 0.5,
        max_batch: int = 500,
        spill_path: Path | None = None,
    ) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.spill_path = spill_path or default_spill_path(engine)
        self._rows = UsageRows(engine, self.spill_path)
        self._buffer: list[Row] = []
        self._set_aside: list[Row] = []
        self._writing = 0  # rows of the batch on its way to the database
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failing_since: float | None = None
        self._failure_logged_at = 0.0
        # Each row's write id: this writer's random prefix, then a counter (unique, and cheap per request).
        self._write_prefix = secrets.token_hex(8)
        self._written = itertools.count()

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="plugway-usage-writer")

    def record(self, *, request_id: str, organisation_id: str, model: str, **columns: Any) -> None:
        """Buffer one ``usage_records`` row (column values; ``created_at`` defaults to now).

        Plain dicts, not ORM objects: building a SQLModel instance per request
        cost about 7% of the gateway's CPU on the hot path.
        """
        row = {**_ROW_DEFAULTS, **columns, "request_id": request_id, "organisation_id": organisation_id, "model": model}
        row.setdefault("created_at", datetime.now(UTC))
        row["write_id"] = f"{self._write_prefix}{next(self._written):x}"
        self._buffer.append(row)
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    def unwritten(self) -> list[Row]:
        """Rows recorded here that the database does not hold: still buffered, or refused and set aside."""
        return [*self._buffer, *self._set_aside]

    def backlog(self) -> int:
        """Rows recorded here that the database does not hold yet, the batch being written included."""
        return len(self._buffer) + len(self._set_aside) + self._writing

    async def flush(self) -> None:
        """Write everything buffered; raises :class:`UsageNotWritten` when the database cannot be written."""
        async with self._lock:
            await self._flush_locked()

    async def read_with_unwritten(
        self, read: Callable[[], T], *, marked: Callable[[], None] | None = None
    ) -> tuple[T, list[Row]]:
        """Try to write what is buffered, call ``marked()``, then run ``read`` in a thread with no write in between.

        Returns what ``read`` returned and the rows recorded before
        ``marked()`` that the database does not hold (the write failed, or the
        database refused them). So a reader counts every record made before
        ``marked()`` exactly once, whether or not the database took it: the
        budget guard relies on it. Raises only if ``read`` raises.
        """
        async with self._lock:
            # While writes fail, the background task retries; a reader must not wait on a dead database twice.
            if self._failing_since is None:
                with contextlib.suppress(UsageNotWritten):
                    await self._flush_locked()
            if marked is not None:
                marked()
            unwritten = self.unwritten()
            return await anyio.to_thread.run_sync(read), unwritten

    async def _flush_locked(self) -> None:
        while self._buffer:
            batch = self._buffer[: self.max_batch]
            del self._buffer[: len(batch)]
            self._writing = len(batch)
            try:
                # After a failed write its rows may be in the database already (the connection broke
                # after the commit reached it): the next write leaves out those it holds.
                refused = await anyio.to_thread.run_sync(self._rows.store, batch, self._failing_since is not None)
            except _StoppedWriting as stopped:
                self._buffer[:0] = stopped.unwritten
                self._set_rows_aside(stopped.refused)
                cause = stopped.__cause__ or stopped
                self._writes_failing(cause)
                raise UsageNotWritten(
                    f"{len(self._buffer)} usage records not written: {failure_reason(cause)}"
                ) from cause
            except BaseException:
                self._buffer[:0] = batch
                raise
            finally:
                self._writing = 0
            self._set_rows_aside(refused)
        self._writes_resumed()

    def _set_rows_aside(self, refused: list[tuple[Row, str]]) -> None:
        for row, why in refused:
            log.error(
                "usage record of request %s (organisation %s) cannot be stored: %s; saved to %s",
                row.get("request_id"), row.get("organisation_id"), why, self.spill_path,
            )
            self._set_aside.append(row)
        del self._set_aside[:-SET_ASIDE_KEPT]

    def _writes_failing(self, cause: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._failure_logged_at = now
            log.error(
                "cannot write usage records (%s); %d kept in memory and retried every %.1f s",
                failure_reason(cause), len(self._buffer), self.flush_interval_s,
            )
        elif now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.error(
                "still cannot write usage records after %.0f s (%s); %d kept in memory",
                now - self._failing_since, failure_reason(cause), len(self._buffer),
            )

    def _writes_resumed(self) -> None:
        if self._failing_since is not None:
            log.warning("usage records are written again, after %.0f s", time.monotonic() - self._failing_since)
            self._failing_since = None

    async def _run(self) -> None:
        await flush_until_stopped(self.flush, wake=self._wake, stop=self._stop, interval_s=self.flush_interval_s)

    async def aclose(self) -> None:
        """Stop the background task and write what is buffered. Never raises (cancellation aside).

        Rows the database will not take are appended to the spill file, and an
        error names how many and where (or, if even the file cannot be
        written, the log holds the rows themselves).
        """
        if self._task is not None:
            self._stop.set()
            self._wake.set()
            # It finishes the write in progress, if any, and returns.
            await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            async with self._lock:
                rows, self._buffer = self._buffer, []
            reason = f"not written at shutdown: {failure_reason(exc.__cause__ or exc)}"
            saved = await anyio.to_thread.run_sync(self._rows.spill, [(row, reason) for row in rows])
            if saved:
                log.error(
                    "%d usage records could not be written at shutdown (%s); saved to %s: "
                    "replay them with `plugway usage replay %s`",
                    len(rows), reason, self.spill_path, self.spill_path,
                )


def replay_spilled(engine: Engine, path: Path) -> tuple[int, int]:
    """Write the rows saved in a spill file; keep in it only those still refused. Returns (written, refused).

    The file is first renamed aside, so a gateway appending to it meanwhile
    starts a new one and nothing is lost or written twice. Raises
    :class:`UsageNotWritten` when the database cannot be written, and
    ValueError for a line that is not a saved record (either way the rows are
    put back in the file).
    """
    if not path.exists():
        return 0, 0
    working = path.with_name(f"{path.name}.replaying-{os.getpid()}")
    path.rename(working)
    lines = working.read_text(encoding="utf-8").splitlines(keepends=True)
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            # Rows saved by an older version lack newer columns (requested_model): they take the defaults.
            entries.append({**entry, "row": {**_ROW_DEFAULTS, **_from_json(entry["row"])}})
        except (ValueError, KeyError, TypeError, AttributeError):
            # Nothing written yet: put the file back as it was (after anything appended meanwhile).
            with open(path, "a", encoding="utf-8") as file:
                file.writelines(lines)
            working.unlink()
            raise ValueError(f"{path}: line {number} is not a saved usage record; nothing was replayed") from None
    saved_rows = [entry["row"] for entry in entries]
    reasons = {id(entry["row"]): str(entry.get("reason", "")) for entry in entries}
    rows = UsageRows(engine, path)
    try:
        refused = rows.store(saved_rows)  # saves the rows refused again to ``path``
    except _StoppedWriting as stopped:
        # Back into the file with their original reasons: none of them was written.
        rows.spill([(row, reasons[id(row)]) for row in stopped.unwritten])
        working.unlink()
        cause = stopped.__cause__ or stopped
        raise UsageNotWritten(f"the database cannot be written ({failure_reason(cause)})") from cause
    working.unlink()
    return len(saved_rows) - len(refused), len(refused)
