"""The WhatsApp queue's state for the metrics: read from the database at scrape time.

Queue depth and the age of the oldest waiting message are facts about the
shared table, not about one process: whichever process answers ``/metrics``
reads them (a ``mostrecent`` gauge in multiprocess mode).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, func, select


@dataclass
class QueueState:
    pending: int = 0
    processing: int = 0
    failed: int = 0
    oldest_pending_age_s: float = 0.0


def queue_state(engine: Engine, app_ids: list[str]) -> dict[str, QueueState]:
    """Per app: messages pending, being processed, given up on, and the oldest pending one's age."""
    from workers.whatsapp.models import InboundStatus, WaInbound

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
