"""Monthly budgets: 402 insufficient_credits once the UTC month's spend reaches the budget, and a fresh start next month."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import create_engine, event, text
from sqlmodel import Session

from runtime.billing import BudgetGuard, Reservation, dollars, month_bounds
from runtime.config import OrganisationConfig
from runtime.errors import GatewayError
from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from runtime.storage.models import UsageRecord
from runtime.storage.usage import UsageWriter
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways

# gpt-test costs $1 per million prompt tokens: one such request costs exactly $1.
ONE_DOLLAR = Reply(text="ok", prompt_tokens=1_000_000, completion_tokens=0)
THRIFTY = {"id": "thrifty", "monthly_budget_usd": 2.5}


def _ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])


def test_spent_budget_answers_402_and_usage_shows_no_credit(
    servers: Gateways, upstream: FakeOpenAI, database_url: str
) -> None:
    server = servers.start(database_url=database_url, extra_orgs=[THRIFTY])
    key = server.mint("thrifty", rpm=1000)
    now = datetime.now(UTC)
    last_month = month_bounds(now)[0] - timedelta(days=2)
    with Session(server.gateway.engine) as session:
        # Last month's spending does not count against this month's budget.
        session.add(UsageRecord(request_id="old", organisation_id="thrifty", model="gpt-test", cost_usd=500.0, created_at=last_month))
        session.commit()
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    upstream.responder = lambda body: ONE_DOLLAR
    for _ in range(3):  # $0, $1, $2 spent before each: all under $2.50
        _ask(client)
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(client)
    assert refused.value.status_code == 402
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "insufficient_credits"
    assert "($3.00 of $2.50)" in error["message"]
    assert len(upstream.requests) == 3  # the refused request never reached the provider
    usage = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert usage["total_cost_usd"] == pytest.approx(3.0)
    assert usage["monthly_budget_usd"] == 2.5
    assert usage["credit_remaining_usd"] == 0
    old = httpx.get(
        f"{server.base_url}/usage",
        params={"start": last_month.date().isoformat(), "end": month_bounds(now)[0].isoformat()},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()
    assert old["total_cost_usd"] == pytest.approx(500.0)
    assert old["credit_remaining_usd"] == 0  # credit is always this month's

    # Other organisations are not affected.
    other = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0, timeout=20)
    _ask(other)


def test_a_fresh_process_sees_the_spend_of_earlier_ones(servers: Gateways, upstream: FakeOpenAI, database_url: str) -> None:
    first = servers.start(database_url=database_url, extra_orgs=[THRIFTY])
    key = first.mint("thrifty")
    upstream.responder = lambda body: ONE_DOLLAR
    client = openai.OpenAI(base_url=first.base_url, api_key=key, max_retries=0, timeout=20)
    for _ in range(3):
        _ask(client)
    first.flush_usage()
    second = servers.start(database_url=database_url, extra_orgs=[THRIFTY])
    with pytest.raises(openai.APIStatusError) as refused:
        _ask(openai.OpenAI(base_url=second.base_url, api_key=key, max_retries=0, timeout=20))
    assert refused.value.status_code == 402


async def test_budget_resets_at_the_utc_month_boundary(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    writer = UsageWriter(engine, flush_interval_s=60)
    guard = BudgetGuard(engine, writer, ttl_s=3600)
    org = OrganisationConfig(id="thrifty", monthly_budget_usd=10.0)
    end_of_month = datetime(2031, 1, 31, 23, 59, 59, tzinfo=UTC)
    try:
        writer.record(request_id="a", organisation_id="thrifty", model="m", cost_usd=7.0, created_at=end_of_month - timedelta(hours=1))
        guard.note("thrifty", 7.0)
        await guard.check(org, now=end_of_month)  # $7 < $10
        guard.note("thrifty", 3.0)  # recorded in-process, not yet written: counts at once
        with pytest.raises(GatewayError) as refused:
            await guard.check(org, now=end_of_month)
        assert (refused.value.status, refused.value.code) == (402, "insufficient_credits")
        assert "2031-02-01T00:00:00Z" in refused.value.message
        # One second later it is February: a new period, nothing spent yet.
        await guard.check(org, now=end_of_month + timedelta(seconds=1))
        assert await guard.month_spend("thrifty", now=end_of_month + timedelta(seconds=1)) == 0
        # January's figure is read from the database, the unwritten record included, never twice.
        fresh = BudgetGuard(engine, writer, ttl_s=3600)
        assert await fresh.month_spend("thrifty", now=end_of_month) == pytest.approx(7.0)
    finally:
        await writer.aclose()
        engine.dispose()


async def test_concurrent_checks_share_one_database_read(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    writer = UsageWriter(engine)
    guard = BudgetGuard(engine, writer, ttl_s=3600)
    sums: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if "sum(usage_records.cost_usd)" in statement:
            sums.append(statement)

    try:
        org = OrganisationConfig(id="o", monthly_budget_usd=1.0)
        await asyncio.gather(*(guard.check(org) for _ in range(50)))
        await guard.check(org)
        assert len(sums) == 1  # 51 checks, one database read: the hot path stays off the database
    finally:
        await writer.aclose()
        engine.dispose()


def test_spent_budget_also_stops_the_runtime_for_other_sources(
    servers: Gateways, upstream: FakeOpenAI, database_url: str
) -> None:
    """The WhatsApp worker calls Gateway.complete directly: it must not spend past the budget either."""
    server = servers.start(database_url=database_url, extra_orgs=[THRIFTY])
    upstream.responder = lambda body: ONE_DOLLAR
    gateway = server.gateway
    loop = gateway.usage._task.get_loop()  # type: ignore[union-attr]

    def complete() -> None:
        coroutine = gateway.complete(
            organisation_id="thrifty", model="gpt-test", messages=[{"role": "user", "content": "hi"}],
            plugin_ids=[], request_id="wa-1", source="whatsapp",
        )
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=20)

    for _ in range(3):
        complete()
    with pytest.raises(GatewayError) as refused:
        complete()
    assert refused.value.status == 402 and refused.value.code == "insufficient_credits"
    assert len(upstream.requests) == 3


async def test_the_budget_check_answers_while_usage_cannot_be_written(database_url: str, tmp_path: Path) -> None:
    """The writer's database refuses every write; the guard still answers from the database it can
    read plus what this process holds unwritten, and never raises anything but a 402."""
    engine = make_engine(database_url)
    upgrade(engine)
    with Session(engine) as session:
        session.add(UsageRecord(request_id="earlier", organisation_id="thrifty", model="m", cost_usd=2.0))
        session.commit()
    unwritable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2})
    writer = UsageWriter(unwritable, flush_interval_s=60, spill_path=tmp_path / "unwritten.jsonl")
    guard = BudgetGuard(engine, writer, ttl_s=0)  # every check asks the database
    try:
        writer.record(request_id="buffered", organisation_id="thrifty", model="m", cost_usd=1.0)
        guard.note("thrifty", 1.0)
        assert await guard.month_spend("thrifty") == pytest.approx(3.0)
        await guard.check(OrganisationConfig(id="thrifty", monthly_budget_usd=10.0))
        with pytest.raises(GatewayError) as refused:
            await guard.check(OrganisationConfig(id="thrifty", monthly_budget_usd=2.5))
        assert refused.value.status == 402
        # Recorded after that read: counted once, from the process's own tally.
        writer.record(request_id="later", organisation_id="thrifty", model="m", cost_usd=0.5)
        guard.note("thrifty", 0.5)
        assert await guard.month_spend("thrifty") == pytest.approx(3.5)
    finally:
        await writer.aclose()
        unwritable.dispose()
        engine.dispose()


async def test_the_budget_check_answers_when_the_database_cannot_be_read_either(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    writer = UsageWriter(engine, flush_interval_s=60, spill_path=tmp_path / "unwritten.jsonl")
    guard = BudgetGuard(engine, writer, ttl_s=0)
    org = OrganisationConfig(id="thrifty", monthly_budget_usd=2.5)
    try:
        writer.record(request_id="one", organisation_id="thrifty", model="m", cost_usd=1.0)
        guard.note("thrifty", 1.0)
        await guard.check(org)  # a good read: $1 in the database
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))
        for request_id in ("two", "three"):
            writer.record(request_id=request_id, organisation_id="thrifty", model="m", cost_usd=1.0)
            guard.note("thrifty", 1.0)
        # The last figure read, plus what this process spent since: $3, over the budget.
        with pytest.raises(GatewayError) as refused:
            await guard.check(org)
        assert refused.value.status == 402
        assert await guard.month_spend("thrifty") == pytest.approx(3.0)
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))
        await writer.aclose()
        engine.dispose()


def test_budgeted_requests_are_not_500_while_usage_cannot_be_written(
    servers: Gateways, upstream: FakeOpenAI, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = servers.start(database_url=database_url, extra_orgs=[THRIFTY])
    server.gateway.budget.ttl_s = 0  # every check asks the database, as after the 2 s cache expires
    key = server.mint("thrifty")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    upstream.responder = lambda body: ONE_DOLLAR
    _ask(client)
    server.flush_usage()
    with server.gateway.engine.begin() as connection:
        connection.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))
    try:
        _ask(client)  # $1 spent before it
        _ask(client)  # $2 spent before it
        with pytest.raises(openai.APIStatusError) as refused:
            _ask(client)  # $3 spent before it: over $2.50
        assert refused.value.status_code == 402
    finally:
        with server.gateway.engine.begin() as connection:
            connection.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))
    server.flush_usage()
    usage = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert usage["total_cost_usd"] == pytest.approx(3.0)


async def test_holds_of_requests_in_flight_count_until_they_settle(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'holds.db'}")
    upgrade(engine)
    writer = UsageWriter(engine, flush_interval_s=60)
    guard = BudgetGuard(engine, writer, ttl_s=3600, hold_ttl_s=3600)
    org = OrganisationConfig(id="held", monthly_budget_usd=1.0)
    try:
        first = await guard.check(org, reserve_usd=0.6)
        second = await guard.check(org, reserve_usd=0.6)  # $0.60 held is under $1: admitted, $1.20 now held
        with pytest.raises(GatewayError) as refused:
            await guard.check(org, reserve_usd=0.01)
        assert refused.value.code == "insufficient_credits" and "held by requests in progress" in refused.value.message
        # A call made inside the first request (its tool's sampling) is not held back by that request's own hold.
        inner = await guard.check(org, reserve_usd=0.01, within_hold=first)
        guard.release("held", inner)
        # The second request settles at its real cost: $0.10 spent, $0.60 still held, so there is room again.
        assert guard.settle(Reservation("held", second, "limit-id"), "held", 0.1) == "limit-id"
        assert guard.settle(Reservation("held", second, "limit-id", settled=True), "held", 0.0) is None
        assert await guard.month_spend("held") == pytest.approx(0.1)
        assert guard.held("held") == pytest.approx(0.6)
        await guard.check(org)
    finally:
        await writer.aclose()
        engine.dispose()


def test_amounts_below_a_cent_are_written_with_the_decimals_they_need() -> None:
    assert [dollars(x) for x in (0, 2.5, 1234.5, 0.01, 0.005, 0.0000123, 1e-9)] == [
        "$0.00", "$2.50", "$1,234.50", "$0.01", "$0.005", "$0.000012", "less than $0.000001",
    ]
