"""Endpoint sessions: the conversation a client resumes by ``session_id``, kept by the gateway.

A session belongs to one organisation and one endpoint; another organisation's
(or endpoint's) id reads as unknown. Its messages are the conversation as the
model saw it, tool rounds included, without the system prompt (which is applied
fresh each time). Requests on one session are serialised across every gateway
process by a lease in the row itself: ``UPDATE ... WHERE the lease is free``,
retried until it succeeds, released when the request ends (a crashed holder's
lease expires). Expired sessions are ignored when read and purged now and then.
Functions here are synchronous: run them in a worker thread.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Text,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlmodel import Field, SQLModel

from runtime.json_types import JSON


class EndpointSession(SQLModel, table=True):
    __tablename__ = "endpoint_sessions"

    id: str = Field(primary_key=True, max_length=64)
    organisation_id: str = Field(index=True, max_length=128)
    endpoint: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    messages: str = Field(sa_column=Column(Text, nullable=False))
    lock_owner: str | None = Field(default=None, max_length=64)
    locked_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


_TABLE = SQLModel.metadata.tables["endpoint_sessions"]


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(16)


def whatsapp_session_id(app_id: str, sender: str) -> str:
    """One session per WhatsApp app and customer, the same on every worker."""
    return "wa_" + hashlib.sha256(f"{app_id}\x00{sender}".encode()).hexdigest()[:40]


def create(engine: Engine, *, session_id: str, organisation_id: str, endpoint: str, ttl_hours: float, owner: str, lease_s: float) -> None:
    """A new, empty session, already leased to ``owner``."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(_TABLE),
            {
                "id": session_id,
                "organisation_id": organisation_id,
                "endpoint": endpoint,
                "created_at": now,
                "updated_at": now,
                "expires_at": now + timedelta(hours=ttl_hours),
                "messages": "[]",
                "lock_owner": owner,
                "locked_until": time.time() + lease_s,
            },
        )


def _this(session_id: str, organisation_id: str, endpoint: str) -> Any:
    return and_(
        _TABLE.c.id == session_id,
        _TABLE.c.organisation_id == organisation_id,
        _TABLE.c.endpoint == endpoint,
        _TABLE.c.expires_at > datetime.now(UTC),
    )


def exists(engine: Engine, *, session_id: str, organisation_id: str, endpoint: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(select(_TABLE.c.id).where(_this(session_id, organisation_id, endpoint))).first() is not None


def try_lock(engine: Engine, *, session_id: str, organisation_id: str, endpoint: str, owner: str, lease_s: float) -> bool:
    """Take the session's lease if it is free (or expired); True when this call took it."""
    now = time.time()
    with engine.begin() as connection:
        result = connection.execute(
            update(_TABLE)
            .where(_this(session_id, organisation_id, endpoint), or_(_TABLE.c.locked_until.is_(None), _TABLE.c.locked_until < now))
            .values(lock_owner=owner, locked_until=now + lease_s)
        )
    return bool(result.rowcount)


def messages(engine: Engine, *, session_id: str) -> list[JSON]:
    with engine.connect() as connection:
        stored = connection.execute(select(_TABLE.c.messages).where(_TABLE.c.id == session_id)).scalar_one_or_none()
    return list(orjson.loads(stored)) if stored else []


def save(engine: Engine, *, session_id: str, owner: str, conversation: list[JSON], ttl_hours: float) -> None:
    """Store the conversation and release the lease (only the lease holder may)."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            update(_TABLE)
            .where(_TABLE.c.id == session_id, _TABLE.c.lock_owner == owner)
            .values(
                messages=orjson.dumps(conversation).decode(),
                updated_at=now,
                expires_at=now + timedelta(hours=ttl_hours),
                lock_owner=None,
                locked_until=None,
            )
        )


def release(engine: Engine, *, session_id: str, owner: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(_TABLE).where(_TABLE.c.id == session_id, _TABLE.c.lock_owner == owner).values(lock_owner=None, locked_until=None)
        )


def purge_expired(engine: Engine) -> int:
    with engine.begin() as connection:
        result = connection.execute(delete(_TABLE).where(_TABLE.c.expires_at <= datetime.now(UTC)))
    return int(result.rowcount or 0)


def bounded(conversation: list[JSON], *, max_messages: int, max_chars: int) -> list[JSON]:
    """The most recent part of a conversation within both bounds, opening on a user message.

    Oldest messages go first; a cut never leaves a tool result without the
    assistant turn that called it.
    """
    kept = list(conversation[-max_messages:])

    def size(message: JSON) -> int:
        content = message.get("content")
        text = content if isinstance(content, str) else orjson.dumps(content).decode() if content else ""
        return len(text) + sum(len(str((call.get("function") or {}).get("arguments") or "")) for call in message.get("tool_calls") or ())

    total = sum(size(m) for m in kept)
    while kept and total > max_chars:
        total -= size(kept.pop(0))
    while kept and kept[0].get("role") != "user":
        kept.pop(0)
    return kept
