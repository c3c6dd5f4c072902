"""The WhatsApp reply worker's tables: a durable inbound queue, what was sent, status events.

``wa_inbound`` is the queue shared by every worker process: one row per inbound
message, claimed atomically (``UNIQUE (app_id, wamid)`` makes Meta's redeliveries
harmless) and leased while it is being answered. Timestamps are Unix seconds as
floats so that lease arithmetic is a plain comparison on every database.

A malformed message or status event is kept too, with status ``rejected``, the
reason in ``last_error`` (``errors`` for a status event) and the event as received
in ``raw``: the operator sees it, the worker never answers it, and Meta's
redeliveries of it stay harmless.

The column sizes below are the parser's limits as well (``payloads``): a value
that does not fit is refused or cut before it reaches the database, because
PostgreSQL enforces ``VARCHAR(n)`` where SQLite does not.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import BigInteger, Column, Float, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class InboundStatus:
    """Plain strings (not an Enum) so every database driver binds them as text."""

    pending: Final = "pending"  # waiting for a worker, or for a retry (next_attempt_at)
    processing: Final = "processing"  # leased by lease_owner until lease_until
    answered: Final = "answered"  # reply sent (reply_text)
    failed: Final = "failed"  # dead letter: permanent send error or attempts exhausted
    ignored: Final = "ignored"  # recorded, deliberately not answered (reactions, stickers, ...)
    stale: Final = "stale"  # older than max_message_age_s: recorded, never answered
    rejected: Final = "rejected"  # malformed: recorded with the reason (last_error), never answered


# wa_status_event.status of a malformed status event (Meta's own are sent/delivered/read/failed).
REJECTED_STATUS_EVENT: Final = "rejected"

APP_ID_CHARS: Final = 200
WAMID_CHARS: Final = 400
SENDER_CHARS: Final = 200
SENDER_NAME_CHARS: Final = 400
MESSAGE_TYPE_CHARS: Final = 50
STATUS_CHARS: Final = 20


FINAL_STATUSES = (
    InboundStatus.answered,
    InboundStatus.failed,
    InboundStatus.ignored,
    InboundStatus.stale,
    InboundStatus.rejected,
)


class WaInbound(SQLModel, table=True):
    __tablename__ = "wa_inbound"
    __table_args__ = (
        UniqueConstraint("app_id", "wamid", name="uq_wa_inbound_app_wamid"),
        Index("ix_wa_inbound_status_next", "status", "next_attempt_at"),
        Index("ix_wa_inbound_conversation", "conversation_key", "message_ts", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    app_id: str = Field(max_length=APP_ID_CHARS)
    wamid: str = Field(max_length=WAMID_CHARS)
    # "<app_id>:<sender>": one conversation (and one memory) per app and user.
    conversation_key: str = Field(max_length=600)
    sender: str = Field(max_length=SENDER_CHARS)  # wa_id ("from"), or the business-scoped user_id
    sender_name: str | None = Field(default=None, max_length=SENDER_NAME_CHARS)
    message_type: str = Field(max_length=MESSAGE_TYPE_CHARS)
    # The user's words as the model sees them (None: nothing for the model).
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    message_ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: float = Field(sa_column=Column(Float, nullable=False))
    status: str = Field(default=InboundStatus.pending, max_length=STATUS_CHARS)
    next_attempt_at: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Kept once produced, so that a send retry never calls the model twice.
    reply_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Whether reply_text belongs in the conversation memory (canned replies do not).
    reply_in_history: bool = False
    # The orchestration trace of the reply (rounds, tool calls with their outcomes), JSON.
    reply_trace: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    finished_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    raw: str = Field(sa_column=Column(Text, nullable=False))  # the message object as received


class WaOutbound(SQLModel, table=True):
    """One accepted send: a reply part, with the latest delivery status Meta reported."""

    __tablename__ = "wa_outbound"
    __table_args__ = (
        UniqueConstraint("inbound_id", "part_index", name="uq_wa_outbound_part"),
    )

    id: int | None = Field(default=None, primary_key=True)
    wamid: str = Field(max_length=400, unique=True)
    app_id: str = Field(max_length=200)
    inbound_id: int = Field(index=True)
    part_index: int
    recipient: str = Field(max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="accepted", max_length=20)  # accepted/sent/delivered/read/failed
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))


class WaStatusEvent(SQLModel, table=True):
    """Every ``statuses[]`` event, also those about messages this worker did not send.

    A malformed event is kept with status ``rejected`` and the reason in ``errors``
    (``[{"code": "plugway_rejected", "title": <reason>}]``); it never changes an outbound row.
    """

    __tablename__ = "wa_status_event"
    __table_args__ = (
        UniqueConstraint("wamid", "status", "event_ts", name="uq_wa_status_event"),
    )

    id: int | None = Field(default=None, primary_key=True)
    app_id: str = Field(max_length=APP_ID_CHARS)
    wamid: str = Field(max_length=WAMID_CHARS, index=True)
    status: str = Field(max_length=STATUS_CHARS)
    event_ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    recipient: str | None = Field(default=None, max_length=SENDER_CHARS)
    errors: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    received_at: float = Field(sa_column=Column(Float, nullable=False))
    raw: str = Field(sa_column=Column(Text, nullable=False))


# SQLModel's stubs do not declare ``__table__``; the metadata holds the same Table objects.
WHATSAPP_TABLES = [SQLModel.metadata.tables[name] for name in ("wa_inbound", "wa_outbound", "wa_status_event")]
