"""The WhatsApp queue's gauges: read from the database at scrape time (the feature registers them).

Queue depth and the age of the oldest waiting message are facts about the
shared table, not about one process: whichever process answers ``/metrics``
reads them (a ``mostrecent`` gauge in multiprocess mode).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine, func, select

from runtime.telemetry.metrics import Metrics
from workers.whatsapp.models import InboundStatus, WaInbound

log = logging.getLogger("plugway.telemetry")


@dataclass
class QueueState:
    pending: int = 0
    processing: int = 0
    failed: int = 0
    oldest_pending_age_s: float = 0.0


def queue_state(engine: Engine, app_ids: list[str]) -> dict[str, QueueState]:
    """Per app: messages pending, being processed, given up on, and the oldest pending one's age."""
    table = WaInbound.__table__  # type: ignore[attr-defined]
    states = {app_id: QueueState() for app_id in app_ids}
    watched = (InboundStatus.pending, InboundStatus.processing, InboundStatus.failed)
    query = (
        select(table.c.app_id, table.c.status, func.count(), func.min(table.c.received_at))
        .where(table.c.status.in_(watched))
        .group_by(table.c.app_id, table.c.status)
    )
    now = time.time()
    with engine.connect() as connection:
        for app_id, status, count, oldest in connection.execute(query):
            state = states.setdefault(app_id, QueueState())
            if status == InboundStatus.pending:
                state.pending = count
                state.oldest_pending_age_s = max(0.0, now - float(oldest)) if oldest is not None else 0.0
            elif status == InboundStatus.processing:
                state.processing = count
            else:
                state.failed = count
    return states


def queue_gauges(engine: Engine, app_ids: list[str]) -> Callable[[Metrics], Awaitable[None]]:
    """The state sampler that sets the queue gauges of these apps."""

    async def sample(metrics: Metrics) -> None:
        try:
            state = await anyio.to_thread.run_sync(queue_state, engine, app_ids)
        except Exception as exc:  # the database is down: /readyz says so; metrics still answer
            log.warning("metrics: cannot read the WhatsApp queue: %s", type(exc).__name__)
            return
        for app_id, app_state in state.items():
            metrics.whatsapp_queue.labels(app_id, "pending").set(app_state.pending)
            metrics.whatsapp_queue.labels(app_id, "processing").set(app_state.processing)
            metrics.whatsapp_oldest_pending.labels(app_id).set(app_state.oldest_pending_age_s)
            metrics.whatsapp_dead_letters.labels(app_id).set(app_state.failed)

    return sample
