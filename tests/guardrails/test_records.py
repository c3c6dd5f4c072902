"""Hit records: the guardrail_events table, migrated on SQLite and PostgreSQL; never any content."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from runtime.guardrails import GuardrailEvent, hit_rows, record_hits
from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from tests.guardrails.support import guardrails, pii
from tests.services import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path, prefix="guardrails")


def test_hits_are_recorded_without_content(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        text = "mail bob@example.com, card 4111 1111 1111 1111"
        findings = guardrails(pii("redact")).check_text(text, "input").findings
        at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        rows = hit_rows(
            findings,
            organisation_id="acme",
            endpoint="support",
            key_id="key_1",
            stage="input",
            request_id="req-1",
            at=at,
        )
        rows.append(
            {
                "organisation_id": "acme",
                "endpoint": None,
                "key_id": None,
                "guardrail_key": "words",
                "category": "denylist",
                "action": "block",
                "stage": "output",
                "request_id": "req-2",
                "at": at,
            }
        )
        record_hits(engine, rows)
        record_hits(engine, [])
        with engine.connect() as connection:
            stored = (
                connection.execute(select(GuardrailEvent.__table__).order_by("id")).mappings().all()
            )  # type: ignore[attr-defined]
        assert [
            (
                r["organisation_id"],
                r["endpoint"],
                r["key_id"],
                r["guardrail_key"],
                r["category"],
                r["action"],
                r["stage"],
                r["request_id"],
            )
            for r in stored
        ] == [
            ("acme", "support", "key_1", "pii", "email", "redact", "input", "req-1"),
            ("acme", "support", "key_1", "pii", "credit_card", "redact", "input", "req-1"),
            ("acme", None, None, "words", "denylist", "block", "output", "req-2"),
        ]
        assert stored[0]["at"].replace(tzinfo=UTC) == at
        columns = {column["name"] for column in inspect(engine).get_columns("guardrail_events")}
        assert columns == {
            "id",
            "at",
            "organisation_id",
            "endpoint",
            "key_id",
            "guardrail_key",
            "category",
            "action",
            "stage",
            "request_id",
        }
        dumped = repr(stored)
        assert "bob@example.com" not in dumped and "4111" not in dumped
    finally:
        engine.dispose()


def test_a_row_carrying_anything_else_is_refused(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        row = hit_rows(
            guardrails(pii("log")).check_text("bob@example.com", "input").findings,
            organisation_id="acme",
            stage="input",
        )[0]
        with pytest.raises(ValueError, match="take only"):
            record_hits(engine, [{**row, "text": "bob@example.com"}])
        with pytest.raises(ValueError, match="lacks"):
            record_hits(engine, [{k: v for k, v in row.items() if k != "category"}])
        at_now = {k: v for k, v in row.items() if k != "at"}  # "at" defaults to now
        record_hits(engine, [at_now])
        with engine.connect() as connection:
            assert len(connection.execute(select(GuardrailEvent.__table__)).all()) == 1  # type: ignore[attr-defined]
    finally:
        engine.dispose()
