"""Tables: organisations, gateway and admin keys, usage records, the audit log.

Counters, limits and the usage id are 64-bit: an upstream may report billions
of tokens, an operator may allow a trillion a day, and a busy gateway writes
more than 2**31 usage rows. SQLite's INTEGER is already 64-bit (and its
auto-increment key must be spelt INTEGER), so only PostgreSQL gets BIGINT.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Integer, Text
from sqlmodel import Field, SQLModel

# The largest value a 64-bit column holds; anything beyond is refused before it reaches the database.
INT64_MAX = 2**63 - 1
KEY_NAME_MAX_CHARS = 200
COUNTER = BigInteger().with_variant(Integer(), "sqlite")


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
    name: str | None = Field(default=None, max_length=KEY_NAME_MAX_CHARS)
    # SHA-256 of the key: keys are 190+ bits of randomness, so a fast hash is safe.
    key_hash: str = Field(unique=True, index=True, max_length=64)
    prefix: str = Field(max_length=16)
    # None: no limit; 0 refuses every request.
    rpm: int | None = Field(default=None, sa_type=COUNTER)
    daily_tokens: int | None = Field(default=None, sa_type=COUNTER)
    # JSON arrays; None: every scope / every model the organisation may use.
    scopes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    models: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AdminKey(SQLModel, table=True):
    """A key for the management API and the console (``pwa_...``); only its hash is stored."""

    __tablename__ = "admin_keys"

    id: str = Field(primary_key=True, max_length=32)
    name: str | None = Field(default=None, max_length=KEY_NAME_MAX_CHARS)
    key_hash: str = Field(unique=True, index=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AuditEvent(SQLModel, table=True):
    """One admin action: who, what, on what, when, from where."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=COUNTER)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=300)
    action: str = Field(max_length=64)
    target: str = Field(max_length=300)
    source_ip: str | None = Field(default=None, max_length=64)
    details: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage_records"

    id: int | None = Field(default=None, primary_key=True, sa_type=COUNTER)
    request_id: str = Field(index=True, max_length=128)
    organisation_id: str = Field(index=True, max_length=128)
    key_id: str | None = Field(default=None, index=True, max_length=32)
    source: str = Field(default="api", max_length=32)
    # The endpoint that served the request (endpoints, and WhatsApp apps that name one).
    endpoint: str | None = Field(default=None, index=True, max_length=64)
    model: str = Field(max_length=200)
    # The name the client sent when it was an alias of ``model`` (model_aliases); else None.
    requested_model: str | None = Field(default=None, max_length=200)
    provider: str | None = Field(default=None, max_length=128)
    prompt_tokens: int = Field(default=0, sa_type=COUNTER)
    completion_tokens: int = Field(default=0, sa_type=COUNTER)
    total_tokens: int = Field(default=0, sa_type=COUNTER)
    cost_usd: float = 0.0
    rounds: int = Field(default=0, sa_type=COUNTER)
    tool_calls: int = Field(default=0, sa_type=COUNTER)
    latency_ms: float = 0.0
    status: str = Field(default="ok", max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Set by the usage writer, unique: a batch whose commit may or may not have reached the
    # database when the connection broke is written again without the rows it already holds.
    write_id: str | None = Field(default=None, unique=True, index=True, max_length=32)
