"""The request log's tables: one row per request, and the bodies an organisation chose to keep."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text
from sqlmodel import Field, SQLModel

from runtime.storage.models import COUNTER


class RequestLogEntry(SQLModel, table=True):
    """One request as it ended: who asked what, how it went, and its rounds and tool calls."""

    __tablename__ = "request_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=COUNTER)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    request_id: str = Field(index=True, max_length=128)
    route: str = Field(max_length=128)
    method: str = Field(max_length=16)
    # Null when the request was refused before a key (and so an organisation) was known.
    # Only ``at`` and ``request_id`` are indexed: each index is paid on every request's insert,
    # and the list reads newest first by id, where a filter costs a scan of the recent rows.
    organisation_id: str | None = Field(default=None, max_length=128)
    key_id: str | None = Field(default=None, max_length=32)
    endpoint: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=32)
    model: str | None = Field(default=None, max_length=200)
    served_model: str | None = Field(default=None, max_length=200)
    provider: str | None = Field(default=None, max_length=128)
    status: int = Field(default=0)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    prompt_tokens: int = Field(default=0, sa_type=COUNTER)
    completion_tokens: int = Field(default=0, sa_type=COUNTER)
    cost_usd: float = 0.0
    rounds: int = Field(default=0, sa_type=COUNTER)
    tool_calls: int = Field(default=0, sa_type=COUNTER)
    # The tools called, as ",name,name," so that one LIKE finds a tool on any database.
    tools: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The timeline (JSON): rounds and tool calls with their start offsets and durations.
    trace: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class RequestLogBody(SQLModel, table=True):
    """The conversation sent to the model and its answer, after guardrail redaction (``capture_bodies``)."""

    __tablename__ = "request_log_bodies"

    entry_id: int = Field(sa_column=Column(COUNTER, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    organisation_id: str = Field(index=True, max_length=128)
    request: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
