"""Writing the request log off the hot path.

:meth:`RequestLogWriter.record` only appends the request's telemetry record to
a list; a background task turns the records into rows and writes them in one
transaction, in a worker thread, every ``usage.flush_interval_s`` (or sooner
when ``usage.max_batch`` are waiting). Rows are built at write time, not when
the request ends: the request path pays for an append, and a stream still
draining its upstream after the client left has its tokens counted.

Memory is bounded: while the database cannot be written, at most
``MAX_BUFFERED`` records wait; older ones are dropped, and the log says how
many. The request log is for diagnosis, not billing (usage records are the
bill), so it keeps no spill file. ``aclose`` writes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson
from sqlalchemy import Engine, insert
from sqlmodel import SQLModel

from runtime.config import Settings
from runtime.requestlog import models  # noqa: F401  (registers the tables)
from runtime.storage.bulk import insert_rows
from runtime.storage.db import failure_reason
from runtime.storage.usage import flush_until_stopped
from runtime.telemetry.record import RequestRecord

log = logging.getLogger("plugway.requestlog")
Row = dict[str, Any]

# Records kept in memory while the database cannot be written; older ones are dropped.
MAX_BUFFERED = 10_000
# A captured body longer than this is cut (the log is for diagnosis, not an archive).
MAX_BODY_CHARS = 100_000
# Requests that are not the gateway's traffic: the console, the management API, probes.
NOT_LOGGED = ("/console", "/admin/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")


def logged_route(route: str) -> bool:
    return not route.startswith(NOT_LOGGED)


def _body_text(value: Any) -> str | None:
    if value is None:
        return None
    text = orjson.dumps(value, default=str).decode()
    if len(text) > MAX_BODY_CHARS:
        return text[:MAX_BODY_CHARS] + "…(cut)"
    return text


def entry_row(record: RequestRecord, latency_s: float, at: float) -> tuple[Row, Row | None]:
    """The ``request_log`` row of one finished request, and its ``request_log_bodies`` row if captured."""
    timeline = list(record.timeline or ())
    tools = [step["name"] for step in timeline if step["kind"] == "tool"]
    error_code = record.error_code
    if error_code is None and record.outcome and record.outcome != "ok":
        # A stream that failed after its 200: the gateway's own word for how the work ended.
        error_code = record.outcome
    row: Row = {
        "at": datetime.fromtimestamp(at, UTC),
        "request_id": record.request_id[:128],
        "route": record.route[:128],
        "method": record.method[:16],
        "organisation_id": record.organisation or None,
        "key_id": record.key_id,
        "endpoint": record.endpoint,
        "source": record.source or None,
        "model": record.model or None,
        "served_model": record.served_model or None,
        "provider": record.provider or None,
        "status": record.status,
        "error_code": error_code,
        "error_message": record.error_message,
        "latency_ms": round(latency_s * 1000, 2),
        "ttfb_ms": round((record.first_byte - record.started) * 1000, 2) if record.first_byte else None,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_usd": record.cost_usd,
        "rounds": record.rounds,
        "tool_calls": record.tool_calls,
        "tools": ("," + ",".join(dict.fromkeys(tools)) + ",") if tools else None,
        "trace": orjson.dumps(sorted(timeline, key=lambda step: step["start_ms"])).decode() if timeline else None,
    }
    bodies = None
    if record.capture_bodies and record.organisation and (record.request_body is not None or record.response_body is not None):
        bodies = {
            "at": row["at"],
            "organisation_id": record.organisation,
            "request": _body_text(record.request_body),
            "response": _body_text(record.response_body),
        }
    return row, bodies


def write_rows(engine: Engine, rows: list[tuple[Row, Row | None]]) -> None:
    """Insert the entries (one COPY on PostgreSQL, else one executemany) and, for those with
    captured bodies, their bodies."""
    entries = SQLModel.metadata.tables["request_log"]
    bodies = SQLModel.metadata.tables["request_log_bodies"]
    plain = [row for row, body in rows if body is None]
    with engine.begin() as connection:
        if plain:
            insert_rows(connection, entries, plain)
        for row, body in rows:
            if body is None:
                continue
            # Rare (an organisation's opt-in): one statement each, for the id the body is filed under.
            inserted = connection.execute(insert(entries).values(row)).inserted_primary_key
            assert inserted is not None
            connection.execute(insert(bodies).values(entry_id=inserted[0], **body))


class RequestLogWriter:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.flush_interval_s = settings.usage.flush_interval_s
        self.max_batch = settings.usage.max_batch
        self._buffer: list[tuple[RequestRecord, float, float]] = []
        self._dropped = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="plugway-request-log-writer")

    def record(self, record: RequestRecord, latency_s: float) -> None:
        """Buffer a finished request (called by the telemetry when each request ends)."""
        if not logged_route(record.route):
            return
        buffer = self._buffer
        buffer.append((record, latency_s, time.time() - latency_s))
        if len(buffer) >= self.max_batch:
            self._wake.set()
            if len(buffer) > MAX_BUFFERED:
                # The database has been out for a while: keep the newest.
                excess = len(buffer) - MAX_BUFFERED
                del buffer[:excess]
                self._dropped += excess

    def backlog(self) -> int:
        return len(self._buffer)

    async def flush(self) -> None:
        """Write everything buffered; raises when the database cannot be written (the records stay buffered)."""
        async with self._lock:
            while self._buffer:
                batch = self._buffer[: self.max_batch]
                del self._buffer[: len(batch)]
                try:
                    await anyio.to_thread.run_sync(self._write, batch)
                except BaseException as exc:
                    self._buffer[:0] = batch
                    if isinstance(exc, Exception):
                        self._failing(exc)
                    raise
            if self._failing_since is not None:
                log.warning("the request log is written again, after %.0f s", time.monotonic() - self._failing_since)
                self._failing_since = None

    def _write(self, batch: list[tuple[RequestRecord, float, float]]) -> None:
        write_rows(self.engine, [entry_row(record, latency, at) for record, latency, at in batch])

    def _failing(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error("cannot write the request log (%s); %d requests kept in memory, at most %d", failure_reason(exc), len(self._buffer), MAX_BUFFERED)
        if self._dropped:
            log.error("the request log dropped %d requests: the database could not be written for too long", self._dropped)
            self._dropped = 0

    async def _run(self) -> None:
        await flush_until_stopped(self.flush, wake=self._wake, stop=self._stop, interval_s=self.flush_interval_s)

    async def aclose(self) -> None:
        """Stop the background task and write what is left; never raises (cancellation aside)."""
        if self._task is not None:
            self._stop.set()
            self._wake.set()
            await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            log.error("%d request log entries could not be written at shutdown: %s", len(self._buffer), failure_reason(exc))
            self._buffer.clear()
