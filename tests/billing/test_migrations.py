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

from runtime.storage.db import make_engine
from runtime.storage.keys import mint_key
from runtime.storage.migrations import current_revision, head_revision, target_metadata, upgrade
from runtime.storage.models import ApiKey

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
            return list(compare_metadata(MigrationContext.configure(connection), target_metadata()))
    finally:
        engine.dispose()


def test_upgrade_from_empty_gives_the_models_tables(database_url: str) -> None:
    assert _tables(database_url) == set()
    upgrade(database_url)
    expected = set(target_metadata().tables)
    assert {"organisations", "api_keys", "usage_records"} <= expected
    assert _tables(database_url) == expected | {"alembic_version"}
    # Columns, types, nullability, indexes and constraints all match the models.
    assert _diff(database_url) == []


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
        core = [target_metadata().tables[name] for name in ("organisations", "api_keys", "usage_records")]
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
