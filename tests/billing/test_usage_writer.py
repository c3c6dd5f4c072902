"""The usage writer under bad rows and an unwritable database: a row the database refuses is set aside
(and saved for replay) without holding back anyone else's rows; shutdown never loses the buffer silently."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from runtime.storage.models import UsageRecord
from runtime.storage.usage import UsageWriter, default_spill_path
from tests.cli.runner import assert_clear_failure, plugway
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways

# Past PostgreSQL's INTEGER, inside BIGINT: stored as given.
BIG = 3_000_000_000
# Past BIGINT (but a valid JSON number an upstream can send): no database column can hold it.
TOO_BIG = 2**63


@pytest.fixture
def engine(database_url: str) -> Engine:
    upgrade(database_url)
    created = make_engine(database_url)
    yield created
    created.dispose()


def _rows(engine: Engine) -> list[UsageRecord]:
    with Session(engine) as session:
        return list(session.exec(select(UsageRecord).order_by(UsageRecord.request_id)))  # type: ignore[arg-type]


def _spilled(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _rename_usage_table(engine: Engine, old: str, new: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_refused_row_is_set_aside_and_every_other_row_is_written(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "unwritten.jsonl"
    writer = UsageWriter(engine, flush_interval_s=60, spill_path=spill)
    writer.record(request_id="a1", organisation_id="a", model="m", prompt_tokens=BIG, total_tokens=BIG)
    writer.record(request_id="b1", organisation_id="b", model="m", total_tokens=TOO_BIG, cost_usd=1.5)
    # A whole number sent as a float is still a whole number.
    writer.record(request_id="c1", organisation_id="c", model="m", prompt_tokens=1.0, total_tokens=1)
    # Refused by the database itself rather than by the writer's own check: a string past its column.
    writer.record(request_id="d1", organisation_id="d", model="m" * 300, total_tokens=1)
    with caplog.at_level(logging.ERROR, logger="plugway.usage"):
        await writer.flush()  # no exception: the refused rows do not fail the batch
        writer.record(request_id="e1", organisation_id="e", model="m", total_tokens=2)
        await writer.flush()
    written = [r.request_id for r in _rows(engine)]
    if engine.dialect.name == "sqlite":
        # SQLite stores a long string as it is; only PostgreSQL refuses it.
        assert written == ["a1", "c1", "d1", "e1"]
        refused = ["b1"]
    else:
        assert written == ["a1", "c1", "e1"]
        refused = ["b1", "d1"]
    assert [r.prompt_tokens for r in _rows(engine)][:2] == [BIG, 1]
    saved = _spilled(spill)
    assert sorted(entry["row"]["request_id"] for entry in saved) == refused
    b1 = next(entry for entry in saved if entry["row"]["request_id"] == "b1")
    assert b1["row"]["total_tokens"] == TOO_BIG and b1["row"]["organisation_id"] == "b"
    assert "total_tokens" in b1["reason"]
    # Reported: which request, which organisation, why, and where the row was saved.
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert "b1" in report and str(spill) in report
    # Kept in memory too, so this process's budget checks still count the spend.
    assert [row["request_id"] for row in writer.unwritten()] == refused
    await writer.aclose()


async def test_aclose_saves_what_the_database_will_not_take_and_replay_writes_it(
    engine: Engine, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "unwritten.jsonl"
    writer = UsageWriter(engine, flush_interval_s=0.05, spill_path=spill)
    writer.start()
    _rename_usage_table(engine, "usage_records", "usage_records_away")
    moment = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    for i in range(3):
        writer.record(request_id=f"r{i}", organisation_id="acme", model="m", total_tokens=10 + i, cost_usd=0.25, created_at=moment)
    with caplog.at_level(logging.INFO, logger="plugway.usage"):
        await writer.aclose()  # never raises: the gateway must go on closing everything else
    closing = [r for r in caplog.records if r.levelno >= logging.ERROR and "3 usage records" in r.getMessage()]
    assert closing and str(spill) in closing[-1].getMessage(), [r.getMessage() for r in caplog.records]
    assert sorted(entry["row"]["request_id"] for entry in _spilled(spill)) == ["r0", "r1", "r2"]

    _rename_usage_table(engine, "usage_records_away", "usage_records")
    config = tmp_path / "plugway.yaml"
    config.write_text(f"database_url: '{database_url}'\n")
    replayed = plugway("usage", "replay", str(spill), "--config", str(config), cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "3 usage records written" in replayed.stdout
    rows = _rows(engine)
    assert [(r.request_id, r.total_tokens, r.cost_usd) for r in rows] == [("r0", 10, 0.25), ("r1", 11, 0.25), ("r2", 12, 0.25)]
    assert rows[0].created_at.replace(tzinfo=UTC) == moment
    assert not spill.exists()
    again = plugway("usage", "replay", str(spill), "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to replay" in again.stdout


async def test_replay_keeps_rows_the_database_still_refuses(engine: Engine, database_url: str, tmp_path: Path) -> None:
    spill = tmp_path / "unwritten.jsonl"
    writer = UsageWriter(engine, flush_interval_s=60, spill_path=spill)
    writer.record(request_id="bad", organisation_id="acme", model="m", total_tokens=TOO_BIG)
    await writer.aclose()
    config = tmp_path / "plugway.yaml"
    config.write_text(f"database_url: '{database_url}'\n")
    replayed = plugway("usage", "replay", str(spill), "--config", str(config), cwd=tmp_path)
    assert replayed.returncode == 1
    assert "0 usage records written, 1 still refused" in replayed.stdout + replayed.stderr
    assert [entry["row"]["request_id"] for entry in _spilled(spill)] == ["bad"]


def test_the_default_spill_file_is_beside_an_sqlite_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        assert default_spill_path(engine) == tmp_path / "gateway.db-unwritten-usage.jsonl"
    finally:
        engine.dispose()


def test_a_huge_upstream_token_count_holds_back_no_one(
    servers: Gateways, upstream: FakeOpenAI, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a PostgreSQL gateway saves rows it cannot write
    server = servers.start(database_url=database_url)
    bare, acme = server.mint("bare"), server.mint("acme")
    ask = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    bare_client = openai.OpenAI(base_url=server.base_url, api_key=bare, max_retries=0, timeout=20)
    acme_client = openai.OpenAI(base_url=server.base_url, api_key=acme, max_retries=0, timeout=20)

    upstream.enqueue(Reply(text="big", prompt_tokens=BIG, completion_tokens=5))
    bare_client.chat.completions.create(**ask)  # type: ignore[call-overload]
    upstream.enqueue(Reply(text="absurd", prompt_tokens=2**62, completion_tokens=2**62))
    bare_client.chat.completions.create(**ask)  # type: ignore[call-overload]
    server.flush_usage()  # the absurd row alone is set aside
    upstream.enqueue(Reply(text="later", prompt_tokens=7, completion_tokens=3))
    acme_client.chat.completions.create(**ask)  # type: ignore[call-overload]
    server.flush_usage()

    def usage(key: str) -> dict:  # type: ignore[type-arg]
        return httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()

    # Counts whose sum leaves 64 bits are not billed as sent: plugway's own estimate of the
    # request ("hi") and the answer ("absurd") replaces them, so no row is refused.
    assert BIG + 5 < usage(bare)["total_tokens"] < BIG + 5 + 100
    assert usage(acme)["total_tokens"] == 10
    assert not server.gateway.usage.spill_path.exists()


def test_replay_of_a_damaged_file_changes_nothing(engine: Engine, database_url: str, tmp_path: Path) -> None:
    spill = tmp_path / "unwritten.jsonl"
    good = json.dumps({"row": {"request_id": "ok", "organisation_id": "acme", "model": "m"}, "reason": "x"})
    spill.write_text(f"{good}\nnot json at all\n")
    config = tmp_path / "plugway.yaml"
    config.write_text(f"database_url: '{database_url}'\n")
    replayed = plugway("usage", "replay", str(spill), "--config", str(config), cwd=tmp_path)
    assert_clear_failure(replayed, str(spill), "line 2")
    assert spill.read_text() == f"{good}\nnot json at all\n"
    assert _rows(engine) == []
