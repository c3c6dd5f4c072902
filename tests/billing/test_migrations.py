"""Alembic migrations: from empty they give exactly the models' tables; twice is a no-op; concurrent starts are safe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel, select

from runtime.api.schema import owners, schema
from runtime.storage.db import make_engine
from runtime.storage.keys import mint_key
from runtime.storage.migrations import current_revision, head_revision, upgrade
from runtime.storage.models import ApiKey, UsageRecord

REPO = Path(__file__).resolve().parents[2]


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), schema()))
    finally:
        engine.dispose()


def test_upgrade_from_empty_gives_the_models_tables(database_url: str) -> None:
    assert _tables(database_url) == set()
    upgrade(database_url)
    expected = set(schema().tables)
    assert {"organisations", "api_keys", "usage_records"} <= expected
    assert _tables(database_url) == expected | {"alembic_version"}
    # Columns, types, nullability, indexes and constraints all match the models.
    assert _diff(database_url) == []


def test_every_table_is_declared_by_the_core_or_one_feature() -> None:
    # Importing the app registers every table; one nobody declares would be missing from schema().
    assert set(owners()) == set(SQLModel.metadata.tables)
    assert owners()["stored_responses"] == "responses" and owners()["wa_inbound"] == "whatsapp"
    assert owners()["usage_records"] == "core"


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        _, row = mint_key(engine, organisation_id="acme", rpm=7)
        upgrade(engine)
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        with Session(engine) as session:
            kept = session.exec(select(ApiKey)).one()
        assert (kept.id, kept.rpm) == (row.id, 7)
    finally:
        engine.dispose()
    assert _diff(database_url) == []


def test_concurrent_upgrades_wait_for_each_other(database_url: str) -> None:
    # Four "processes" start at once on an empty database: none may fail with "table already exists".
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        engine = make_engine(database_url)
        try:
            barrier.wait()
            upgrade(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert _diff(database_url) == []


def test_a_database_made_before_migrations_is_adopted(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        core = [SQLModel.metadata.tables[name] for name in ("organisations", "api_keys", "usage_records")]
        SQLModel.metadata.create_all(engine, tables=core)
        mint_key(engine, organisation_id="legacy")
        upgrade(engine)
        with Session(engine) as session:
            assert [k.organisation_id for k in session.exec(select(ApiKey))] == ["legacy"]
    finally:
        engine.dispose()
    assert _diff(database_url) == []


def test_plugway_db_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "plugway.yaml"
    config.write_text(f"database_url: {url}\n")
    env = {**os.environ, "PLUGWAY_CONFIG": str(config)}
    env.pop("PLUGWAY_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "db", "upgrade", "--config", str(config)],
        cwd=tmp_path,  # no alembic.ini here: the package configures Alembic itself
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "latest revision" in done.stdout
    assert _diff(url) == []


# Values an upstream or an operator may hand us that do not fit a 32-bit INTEGER.
BIG_TOKENS = 3_000_000_000
BIG_DAILY = 1_000_000_000_000


def _store_big_values(engine) -> None:  # type: ignore[no-untyped-def]
    mint_key(engine, organisation_id="big", rpm=2**31, daily_tokens=BIG_DAILY)
    with Session(engine) as session:
        session.add(
            UsageRecord(
                request_id="big", organisation_id="big", model="m", prompt_tokens=BIG_TOKENS,
                completion_tokens=BIG_TOKENS, total_tokens=2 * BIG_TOKENS, rounds=2**31, tool_calls=2**31,
            )
        )
        session.commit()


def _big_values(engine) -> list[tuple[int | None, ...]]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        keys = [(k.rpm, k.daily_tokens) for k in session.exec(select(ApiKey).where(ApiKey.organisation_id == "big"))]
        usage = [
            (r.prompt_tokens, r.completion_tokens, r.total_tokens, r.rounds, r.tool_calls)
            for r in session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "big"))
        ]
    return keys + usage


def test_counters_and_limits_are_64_bit(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        _store_big_values(engine)
        assert _big_values(engine) == [
            (2**31, BIG_DAILY),
            (BIG_TOKENS, BIG_TOKENS, 2 * BIG_TOKENS, 2**31, 2**31),
        ]
        if engine.dialect.name == "postgresql":
            # Ids come from a sequence: it must count past 2**31 too.
            with engine.begin() as connection:
                connection.execute(text("SELECT setval(pg_get_serial_sequence('usage_records', 'id'), 3000000000)"))
        with Session(engine) as session:
            session.add(UsageRecord(request_id="after", organisation_id="big", model="m"))
            session.commit()
            if engine.dialect.name == "postgresql":
                assert session.exec(select(UsageRecord.id).where(UsageRecord.request_id == "after")).one() == 3_000_000_001
    finally:
        engine.dispose()


def test_upgrading_a_0001_database_widens_it_in_place(database_url: str) -> None:
    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    try:
        # Written with 0001's columns only: today's models have columns that revision lacks.
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, organisation_id, name, key_hash, prefix, rpm, daily_tokens, created_at)"
                    " VALUES ('key_legacy', 'legacy', NULL, :hash, 'pw_legacy', 60, 1000, CURRENT_TIMESTAMP)"
                ),
                {"hash": "0" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO usage_records (request_id, organisation_id, source, model, prompt_tokens, completion_tokens,"
                    " total_tokens, cost_usd, rounds, tool_calls, latency_ms, status, created_at)"
                    " VALUES ('old', 'legacy', 'api', 'm', 5, 0, 5, 0, 0, 0, 0, 'ok', CURRENT_TIMESTAMP)"
                )
            )
        upgrade(engine)
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision() != "0001"
        _store_big_values(engine)
        assert len(_big_values(engine)) == 2
        with Session(engine) as session:
            assert [(k.id, k.rpm, k.daily_tokens) for k in session.exec(select(ApiKey).where(ApiKey.organisation_id == "legacy"))] == [("key_legacy", 60, 1000)]
            assert [r.prompt_tokens for r in session.exec(select(UsageRecord).where(UsageRecord.request_id == "old"))] == [5]
    finally:
        engine.dispose()
    assert _diff(database_url) == []
