"""Tables: organisations, gateway keys and usage records."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Organisation(SQLModel, table=True):
    __tablename__ = "organisations"

    id: str = Field(primary_key=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    organisation_id: str = Field(index=True, max_length=128)
    name: str | None = Field(default=None, max_length=200)
    # SHA-256 of the key: keys are 190+ bits of randomness, so a fast hash is safe.
    key_hash: str = Field(unique=True, index=True, max_length=64)
    prefix: str = Field(max_length=16)
    rpm: int | None = None
    daily_tokens: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage_records"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=128)
    organisation_id: str = Field(index=True, max_length=128)
    key_id: str | None = Field(default=None, index=True, max_length=32)
    source: str = Field(default="api", max_length=32)
    model: str = Field(max_length=200)
    provider: str | None = Field(default=None, max_length=128)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    rounds: int = 0
    tool_calls: int = 0
    latency_ms: float = 0.0
    status: str = Field(default="ok", max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
