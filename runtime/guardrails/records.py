"""Guardrail hits, recorded for the operator: who, where, which guardrail, what kind; never the content.

``record_hits`` is synchronous: call it from a worker thread (or the usage
writer's), never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, insert
from sqlmodel import Field, SQLModel

from runtime.guardrails.findings import Finding
from runtime.storage.models import COUNTER

HIT_FIELDS = frozenset(
    {
        "organisation_id",
        "endpoint",
        "key_id",
        "guardrail_key",
        "category",
        "action",
        "stage",
        "request_id",
        "at",
    }
)
_OPTIONAL = frozenset({"endpoint", "key_id", "request_id", "at"})


class GuardrailEvent(SQLModel, table=True):
    __tablename__ = "guardrail_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=COUNTER)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    organisation_id: str = Field(index=True, max_length=128)
    endpoint: str | None = Field(default=None, max_length=128)
    key_id: str | None = Field(default=None, max_length=32)
    guardrail_key: str = Field(max_length=64)
    category: str = Field(max_length=32)
    action: str = Field(max_length=16)
    stage: str = Field(max_length=16)
    request_id: str | None = Field(default=None, index=True, max_length=128)


_TABLE = SQLModel.metadata.tables["guardrail_events"]


def hit_rows(
    findings: Iterable[Finding],
    *,
    organisation_id: str,
    stage: str,
    endpoint: str | None = None,
    key_id: str | None = None,
    request_id: str | None = None,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The rows ``record_hits`` takes, one per finding."""
    when = at or datetime.now(UTC)
    return [
        {
            "organisation_id": organisation_id,
            "endpoint": endpoint,
            "key_id": key_id,
            "guardrail_key": finding.guardrail_key,
            "category": finding.category,
            "action": finding.action,
            "stage": stage,
            "request_id": request_id,
            "at": when,
        }
        for finding in findings
    ]


def record_hits(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert hit rows. A row with any other field (content, say) is refused, so none is ever stored."""
    if not rows:
        return
    clean: list[dict[str, Any]] = []
    for row in rows:
        unknown = set(row) - HIT_FIELDS
        if unknown:
            raise ValueError(
                f"guardrail hit rows take only {sorted(HIT_FIELDS)}; got {sorted(unknown)}"
            )
        missing = HIT_FIELDS - _OPTIONAL - set(row)
        if missing:
            raise ValueError(f"guardrail hit row lacks {sorted(missing)}")
        full = {field: row.get(field) for field in HIT_FIELDS}
        if full["at"] is None:
            full["at"] = datetime.now(UTC)
        clean.append(full)
    with engine.begin() as connection:
        connection.execute(insert(_TABLE), clean)
