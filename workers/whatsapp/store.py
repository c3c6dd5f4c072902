"""The durable inbound queue: storing deliveries, claiming with leases, finishing, history.

Every method is synchronous (SQLAlchemy Core on the gateway's engine) and is
meant to run in a worker thread (``anyio.to_thread.run_sync``), never on the
event loop.

Claiming is one atomic statement on both databases. On PostgreSQL the candidate
rows are chosen with ``FOR UPDATE SKIP LOCKED``, so concurrent workers on
several machines pass each other by instead of queueing; on SQLite a single
``UPDATE ... RETURNING`` is already serialised by the database write lock.
Either way the outer ``UPDATE`` re-checks that the row is still claimable, so a
message is held by at most one live lease. A message is claimable only when no
earlier message of its conversation is unfinished, which answers each
conversation in order, one message at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, String, Table, and_, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError

from runtime.config import WhatsAppAppConfig
from workers.whatsapp.models import (
    REJECTED_STATUS_EVENT,
    WHATSAPP_TABLES,
    InboundStatus,
)
from workers.whatsapp.payloads import (
    InboundMessage,
    RejectedEvent,
    StatusEvent,
    intent_for,
    raw_json,
)

log = logging.getLogger("plugway.whatsapp")

inbound, outbound, status_events = WHATSAPP_TABLES

T = TypeVar("T")

# Delivery states of an outbound message, weakest first: a late "delivered" never
# overwrites "read", and "failed" is final.
_STATUS_RANK = {"accepted": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}


@dataclass(frozen=True)
class StoredDelivery:
    stored: int = 0
    duplicates: int = 0
    stale: int = 0
    ignored: int = 0
    statuses: int = 0
    rejected: int = 0  # malformed events recorded now (a redelivered one is not counted again)


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    app_id: str
    wamid: str
    conversation_key: str
    sender: str
    message_type: str
    text: str | None
    message_ts: int
    attempts: int
    reply_text: str | None
    raw: dict[str, Any]
    sender_name: str | None = None  # the WhatsApp profile name the delivery carried, if any


def conversation_key(app_id: str, sender: str) -> str:
    return f"{app_id}:{sender}"


class InboundStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert

    # --- webhook side ------------------------------------------------------

    def store_delivery(
        self,
        messages: Iterable[tuple[WhatsAppAppConfig, InboundMessage]],
        statuses: Iterable[tuple[WhatsAppAppConfig, StatusEvent]],
        rejected: Iterable[tuple[WhatsAppAppConfig, RejectedEvent]] = (),
        *,
        max_age_s: float,
        now: float | None = None,
    ) -> StoredDelivery:
        """Insert every message and status event, and record every rejected one.

        Redeliveries are no-ops (unique constraints, no check-then-insert). Every
        value passes through ``_storable``, so that no single event can make the
        database refuse the delivery.
        """
        now = time.time() if now is None else now
        messages, statuses, rejected = list(messages), list(statuses), list(rejected)

        def write() -> StoredDelivery:
            counts = {"stored": 0, "duplicates": 0, "stale": 0, "ignored": 0, "statuses": 0, "rejected": 0}
            with self.engine.begin() as conn:
                for app, message in messages:
                    status = self._initial_status(message, max_age_s=max_age_s, now=now)
                    if self._insert_inbound(conn, _message_row(app, message, status, now)):
                        counts["stored"] += 1
                        if status == InboundStatus.stale:
                            counts["stale"] += 1
                        elif status == InboundStatus.ignored:
                            counts["ignored"] += 1
                    else:
                        counts["duplicates"] += 1
                for app, event in statuses:
                    if self._insert_status_event(conn, _status_row(app, event, now)):
                        counts["statuses"] += 1
                        self._apply_status(conn, event.wamid, event.status, event.errors, now)
                for app, refused in rejected:
                    if refused.kind == "message":
                        recorded = self._insert_inbound(conn, _rejected_message_row(app, refused, now))
                    else:
                        recorded = self._insert_status_event(conn, _rejected_status_row(app, refused, now))
                    counts["rejected"] += int(recorded)
            return StoredDelivery(**counts)

        return _retry_locked(write)

    @staticmethod
    def _initial_status(message: InboundMessage, *, max_age_s: float, now: float) -> str:
        if (message.timestamp or now) < now - max_age_s:
            return InboundStatus.stale
        if intent_for(message.raw).action == "none":
            return InboundStatus.ignored
        return InboundStatus.pending

    def _insert_inbound(self, conn: Any, row: dict[str, Any]) -> bool:
        """Insert unless (app_id, wamid) is already there: the unique constraint is the dedupe."""
        stmt = (
            self._insert(inbound)
            .values(_storable(inbound, row))
            .on_conflict_do_nothing(index_elements=["app_id", "wamid"])
            .returning(inbound.c.id)
        )
        # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT.
        return conn.execute(stmt).first() is not None

    def _insert_status_event(self, conn: Any, row: dict[str, Any]) -> bool:
        stmt = (
            self._insert(status_events)
            .values(_storable(status_events, row))
            .on_conflict_do_nothing(index_elements=["wamid", "status", "event_ts"])
            .returning(status_events.c.id)
        )
        return conn.execute(stmt).first() is not None

    def _apply_status(
        self,
        conn: Any,
        wamid: str,
        status: str,
        errors: list[dict[str, Any]] | None,
        now: float,
    ) -> None:
        current = conn.execute(select(outbound.c.status).where(outbound.c.wamid == wamid)).first()
        if current is None:
            return  # not ours, or not recorded yet: record_outbound catches up from the events
        if _STATUS_RANK.get(status, 0) <= _STATUS_RANK.get(current.status, 0):
            return
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if errors:
            values["last_error"] = describe_status_errors(errors)
        conn.execute(update(outbound).where(outbound.c.wamid == wamid).values(_storable(outbound, values)))

    # --- worker side -------------------------------------------------------

    def claim(
        self, *, owner: str, lease_s: float, limit: int = 1, now: float | None = None
    ) -> list[ClaimedMessage]:
        """Lease up to ``limit`` messages, each the oldest unfinished one of its conversation."""
        now = time.time() if now is None else now
        earlier = inbound.alias("earlier")
        claimable = or_(
            inbound.c.status == InboundStatus.pending,
            and_(inbound.c.status == InboundStatus.processing, inbound.c.lease_until < now),
        )
        earlier_unfinished = exists().where(
            earlier.c.conversation_key == inbound.c.conversation_key,
            earlier.c.id != inbound.c.id,
            or_(
                # someone is answering this conversation right now
                and_(earlier.c.status == InboundStatus.processing, earlier.c.lease_until >= now),
                # an earlier message still waits (possibly for a retry): it goes first
                and_(
                    earlier.c.status.in_([InboundStatus.pending, InboundStatus.processing]),
                    tuple_(earlier.c.message_ts, earlier.c.id)
                    < tuple_(inbound.c.message_ts, inbound.c.id),
                ),
            ),
        )
        candidates = (
            select(inbound.c.id)
            .where(claimable, inbound.c.next_attempt_at <= now, ~earlier_unfinished)
            .order_by(inbound.c.message_ts, inbound.c.id)
            .limit(limit)
        )
        if self._postgres:
            candidates = candidates.with_for_update(skip_locked=True, of=inbound)
        stmt = (
            update(inbound)
            .where(inbound.c.id.in_(candidates.scalar_subquery()), claimable)
            .values(
                status=InboundStatus.processing,
                lease_owner=owner,
                lease_until=now + lease_s,
                attempts=inbound.c.attempts + 1,
            )
            .returning(*inbound.c)
        )

        def write() -> list[ClaimedMessage]:
            with self.engine.begin() as conn:
                rows = conn.execute(stmt).all()
            return [
                ClaimedMessage(
                    id=r.id,
                    app_id=r.app_id,
                    wamid=r.wamid,
                    conversation_key=r.conversation_key,
                    sender=r.sender,
                    message_type=r.message_type,
                    text=r.text,
                    message_ts=r.message_ts,
                    attempts=r.attempts,
                    reply_text=r.reply_text,
                    raw=orjson.loads(r.raw),
                    sender_name=r.sender_name,
                )
                for r in sorted(rows, key=lambda r: (r.message_ts, r.id))
            ]

        return _retry_locked(write)

    def _owned(self, message_id: int, owner: str) -> Any:
        return and_(
            inbound.c.id == message_id,
            inbound.c.status == InboundStatus.processing,
            inbound.c.lease_owner == owner,
        )

    def _update_owned(self, message_id: int, owner: str, values: dict[str, Any]) -> bool:
        stmt = update(inbound).where(self._owned(message_id, owner)).values(values)

        def write() -> bool:
            with self.engine.begin() as conn:
                return bool(conn.execute(stmt).rowcount == 1)

        return _retry_locked(write)

    def renew(self, message_id: int, owner: str, *, lease_s: float) -> bool:
        """Extend our lease; False means it was lost (expired and taken by another worker)."""
        return self._update_owned(message_id, owner, {"lease_until": time.time() + lease_s})

    def save_reply(self, message_id: int, owner: str, text: str, *, in_history: bool, trace: dict[str, Any] | None = None) -> bool:
        values: dict[str, Any] = {"reply_text": text, "reply_in_history": in_history}
        if trace is not None:
            values["reply_trace"] = orjson.dumps(trace).decode()
        return self._update_owned(message_id, owner, values)

    def finish(
        self, message_id: int, owner: str, status: str, *, error: str | None = None
    ) -> bool:
        values: dict[str, Any] = {
            "status": status,
            "lease_owner": None,
            "lease_until": None,
            "finished_at": time.time(),
        }
        if error is not None:
            values["last_error"] = error
        return self._update_owned(message_id, owner, values)

    def retry_later(self, message_id: int, owner: str, *, delay_s: float, error: str) -> bool:
        return self._update_owned(
            message_id,
            owner,
            {
                "status": InboundStatus.pending,
                "lease_owner": None,
                "lease_until": None,
                "next_attempt_at": time.time() + delay_s,
                "last_error": error,
            },
        )

    def release(self, message_id: int, owner: str) -> bool:
        """Give a message back untouched (graceful shutdown): the attempt does not count."""
        return self._update_owned(
            message_id,
            owner,
            {
                "status": InboundStatus.pending,
                "lease_owner": None,
                "lease_until": None,
                "attempts": func.greatest(inbound.c.attempts - 1, 0)
                if self._postgres
                else func.max(inbound.c.attempts - 1, 0),
            },
        )

    def sent_parts(self, message_id: int) -> int:
        """How many parts of this message's reply Meta already accepted (resume, never resend)."""

        def read() -> int:
            with self.engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).where(outbound.c.inbound_id == message_id)
                    ).scalar_one()
                )

        return _retry_locked(read)

    def record_outbound(
        self, *, app_id: str, inbound_id: int, part_index: int, wamid: str, recipient: str, body: str
    ) -> None:
        now = time.time()

        def write() -> None:
            with self.engine.begin() as conn:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            outbound.insert().values(
                                wamid=wamid,
                                app_id=app_id,
                                inbound_id=inbound_id,
                                part_index=part_index,
                                recipient=recipient,
                                body=body,
                                status="accepted",
                                created_at=now,
                                updated_at=now,
                            )
                        )
                except IntegrityError:
                    log.warning("outbound %s (part %s of #%s) already recorded", wamid, part_index, inbound_id)
                    return
                # Status webhooks can overtake our own insert: catch up from them.
                for event in conn.execute(
                    select(status_events.c.status, status_events.c.errors).where(
                        status_events.c.wamid == wamid,
                        status_events.c.status != REJECTED_STATUS_EVENT,
                    )
                ).all():
                    errors = orjson.loads(event.errors) if event.errors else None
                    self._apply_status(conn, wamid, event.status, errors, now)

        _retry_locked(write)

    def history(
        self, message: ClaimedMessage, *, max_turns: int
    ) -> list[tuple[str, str]]:
        """The latest answered (user text, reply) pairs before ``message``, oldest first."""
        if max_turns <= 0:
            return []
        stmt = (
            select(inbound.c.text, inbound.c.reply_text)
            .where(
                inbound.c.conversation_key == message.conversation_key,
                inbound.c.status == InboundStatus.answered,
                inbound.c.reply_in_history.is_(True),
                inbound.c.text.is_not(None),
                inbound.c.reply_text.is_not(None),
                tuple_(inbound.c.message_ts, inbound.c.id) < tuple_(message.message_ts, message.id),
            )
            .order_by(inbound.c.message_ts.desc(), inbound.c.id.desc())
            .limit(max_turns)
        )

        def read() -> list[tuple[str, str]]:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            return [(r.text, r.reply_text) for r in reversed(rows)]

        return _retry_locked(read)


def describe_status_errors(errors: list[dict[str, Any]]) -> str:
    """Meta's error list as one line; whatever the fields hold, this never raises."""
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        error_data = error.get("error_data")
        details = error_data.get("details") if isinstance(error_data, dict) else None
        text = f"{error.get('code')}: {error.get('title') or error.get('message') or 'error'}"
        parts.append(f"{text} ({details})" if details else text)
    return "; ".join(parts)


def _message_row(app: WhatsAppAppConfig, message: InboundMessage, status: str, now: float) -> dict[str, Any]:
    intent = intent_for(message.raw)
    return {
        "app_id": app.id,
        "wamid": message.wamid,
        "conversation_key": conversation_key(app.id, message.sender),
        "sender": message.sender,
        "sender_name": message.sender_name,
        "message_type": message.message_type,
        "text": intent.text if intent.action == "model" else None,
        "message_ts": message.timestamp or int(now),
        "received_at": now,
        "status": status,
        "next_attempt_at": now,
        "attempts": 0,
        "reply_in_history": False,
        "finished_at": None if status == InboundStatus.pending else now,
        "raw": raw_json(message.raw),
    }


def _rejected_message_row(app: WhatsAppAppConfig, event: RejectedEvent, now: float) -> dict[str, Any]:
    """A final row: never claimed, never part of a conversation's history."""
    sender = event.wa_user or ""
    return {
        "app_id": app.id,
        "wamid": event.event_id,
        "conversation_key": conversation_key(app.id, sender),
        "sender": sender,
        "sender_name": event.sender_name,
        "message_type": event.message_type or "unknown",
        "text": None,
        "message_ts": event.timestamp or int(now),
        "received_at": now,
        "status": InboundStatus.rejected,
        "next_attempt_at": now,
        "attempts": 0,
        "last_error": event.reason,
        "reply_in_history": False,
        "finished_at": now,
        "raw": event.raw_json,
    }


def _status_row(app: WhatsAppAppConfig, event: StatusEvent, now: float) -> dict[str, Any]:
    return {
        "app_id": app.id,
        "wamid": event.wamid,
        "status": event.status,
        "event_ts": event.timestamp,
        "recipient": event.recipient,
        "errors": raw_json(event.errors) if event.errors else None,
        "received_at": now,
        "raw": raw_json(event.raw),
    }


def _rejected_status_row(app: WhatsAppAppConfig, event: RejectedEvent, now: float) -> dict[str, Any]:
    return {
        "app_id": app.id,
        "wamid": event.event_id,
        "status": REJECTED_STATUS_EVENT,
        "event_ts": event.timestamp,
        "recipient": event.wa_user,
        # Meta's own error shape, so that whoever reads ``errors`` reads this one too.
        "errors": raw_json([{"code": "plugway_rejected", "title": event.reason}]),
        "received_at": now,
        "raw": event.raw_json,
    }


def _storable(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as every database takes it: no NUL in text (PostgreSQL refuses it), and no
    string longer than its ``VARCHAR`` (PostgreSQL enforces the size, SQLite does not).

    The parser already refuses identifiers that would need either; this catches free
    text (a message body, a display name, an error title) and is the last safety net.
    """
    fitted: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, str):
            value = value.replace("\x00", "")
            column_type = table.c[name].type
            if isinstance(column_type, String) and column_type.length is not None:
                value = value[: column_type.length]
        fitted[name] = value
    return fitted


def _retry_locked(operation: Callable[[], T], *, attempts: int = 100) -> T:
    """Run ``operation``, retrying while SQLite reports the database as locked."""
    for attempt in range(attempts):
        try:
            return operation()
        except OperationalError as exc:
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.01 * (attempt + 1), 0.2))
    raise AssertionError("unreachable")


# --- the management API's view --------------------------------------------------------


def _isotime(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else None


class ConversationView:
    """Read-only queries for the management API and the console (synchronous; run in a thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def conversations(self, *, app_id: str | None, offset: int, limit: int) -> list[dict[str, Any]]:
        last = func.max(inbound.c.received_at)
        query = (
            select(inbound.c.conversation_key, inbound.c.app_id, inbound.c.sender, func.max(inbound.c.sender_name), func.count(), last)
            .group_by(inbound.c.conversation_key, inbound.c.app_id, inbound.c.sender)
            .order_by(last.desc(), inbound.c.conversation_key)
            .offset(offset)
            .limit(limit)
        )
        if app_id:
            query = query.where(inbound.c.app_id == app_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {"conversation": key, "app": app, "sender": sender, "sender_name": name, "messages": int(count), "last_message_at": _isotime(at)}
            for key, app, sender, name, count, at in rows
        ]

    def messages(self, conversation: str, *, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(inbound).where(inbound.c.conversation_key == conversation).order_by(inbound.c.message_ts, inbound.c.id).limit(limit)
            ).all()
            ids = [row.id for row in rows]
            parts = conn.execute(select(outbound).where(outbound.c.inbound_id.in_(ids)).order_by(outbound.c.inbound_id, outbound.c.part_index)).all() if ids else []
        sent: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            sent.setdefault(part.inbound_id, []).append({"wamid": part.wamid, "text": part.body, "status": part.status, "error": part.last_error})
        return [
            {
                "id": row.id,
                "wamid": row.wamid,
                "type": row.message_type,
                "text": row.text,
                "status": row.status,
                "error": row.last_error,
                "attempts": row.attempts,
                "received_at": _isotime(row.received_at),
                "reply": row.reply_text,
                "trace": orjson.loads(row.reply_trace) if row.reply_trace else None,
                "sent": sent.get(row.id, []),
            }
            for row in rows
        ]

    def dead_letters(self, *, offset: int, limit: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(inbound)
                .where(inbound.c.status.in_([InboundStatus.failed, InboundStatus.rejected]))
                .order_by(inbound.c.finished_at.desc(), inbound.c.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
        return [
            {
                "id": row.id,
                "app": row.app_id,
                "conversation": row.conversation_key,
                "sender": row.sender,
                "status": row.status,
                "text": row.text,
                "error": row.last_error,
                "attempts": row.attempts,
                "received_at": _isotime(row.received_at),
                "finished_at": _isotime(row.finished_at),
                "requeueable": row.status == InboundStatus.failed,
            }
            for row in rows
        ]

    def requeue(self, message_id: int) -> bool:
        """Put a dead letter back in the queue, once: only a ``failed`` row moves, atomically.

        Its saved reply and the parts already sent are kept, so the worker
        resumes where it stopped and never answers twice.
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                update(inbound)
                .where(inbound.c.id == message_id, inbound.c.status == InboundStatus.failed)
                .values(status=InboundStatus.pending, attempts=0, next_attempt_at=time.time(), lease_owner=None, lease_until=None, finished_at=None)
            )
        return bool(result.rowcount)
