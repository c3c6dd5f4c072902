"""Spend: usage summaries for ``GET /v1/usage`` and the organisations' monthly budgets.

The billing period is the UTC calendar month. An organisation's spend is the
sum of ``usage_records.cost_usd`` in that month.

The budget check runs on every request but asks the database at most once per
organisation every ``ttl_s`` seconds (2 s by default): between two reads it
adds the cost this process has recorded since the last one. Other processes'
spend becomes visible after their usage writer flushes (``usage.flush_interval_s``)
and this cache expires, so with several gateway processes an organisation can
overshoot its budget by at most what the *other* processes spend within
``ttl_s + flush_interval_s`` (2.5 s by default), plus the cost of requests
already in flight when the budget ran out (a request is checked when it starts,
and is never cut off midway).

The check never depends on the usage writer's health: when usage cannot be
written, the database's figure is completed with the records this process
holds unwritten; when the database cannot even be read, the last figure read
(or, if there is none, nothing) plus this process's spend since is used, and
the database is asked again at the next check. A request is never refused
with a 500 because of billing's own bookkeeping.

Reservations: an admitted request holds its largest possible cost (see
:mod:`runtime.limits.reservation`) until it settles, and a request is refused
while spend plus every hold reaches the budget. Concurrent requests therefore
see each other at once, and the spend can pass the budget by at most the cost
of the one request admitted last (as long as each request stays within its
reservation). Settling counts the real cost and releases the hold; a hold that
is never settled (a path that admitted but never ran) lapses after
``limits.reservation_ttl_s``.

Where the holds live: with a Redis limiter (``Limiter.holds_budgets``), in
Redis, checked and taken in the limit check's one script call against
:meth:`BudgetGuard.database_spend`, with each settled cost kept there until
every process's database figure shows it: the bound above then holds across
every gateway process, and the cross-process lag described above no longer
applies. Without Redis, here (:meth:`BudgetGuard.check`), for one process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from runtime.config import ModelConfig, OrganisationConfig, Price, Settings
from runtime.errors import GatewayError, invalid_request
from runtime.limits.reservation import Planned, plan
from runtime.limits.reservation import (
    Reservation as Reservation,  # where it lives: below the request types
)
from runtime.limits.usage import (
    checked_usage as checked_usage,  # where it lives: the run's state checks usage
)
from runtime.storage.models import UsageRecord
from runtime.storage.usage import UsageWriter

BUDGET_CACHE_TTL_S = 2.0
# How long a usage row may take to be written once its flush starts (for how long Redis keeps a settled cost).
BUDGET_WRITE_MARGIN_S = 2.0
# Usage periods are bounded so that month arithmetic never leaves datetime's range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
log = logging.getLogger("plugway.billing")


def dollars(amount: float) -> str:
    """An amount in US dollars: cents, or as many decimals as a smaller amount needs (up to six)."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.6f}".rstrip("0") if round(amount, 6) else "less than $0.000001"


def insufficient_credits(
    organisation_id: str, budget_usd: float, spent_usd: float, renews: datetime, *, held_usd: float = 0.0
) -> GatewayError:
    held = f", {dollars(held_usd)} more held by requests in progress" if held_usd > 0 else ""
    return GatewayError(
        402,
        f"The monthly budget of organisation '{organisation_id}' is spent "
        f"({dollars(spent_usd)} of {dollars(budget_usd)}{held}). Requests are refused until the next period "
        f"starts at {renews.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
        code="insufficient_credits",
        type="insufficient_quota",
    )


# -- periods --------------------------------------------------------------------------


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``moment``: ``[start, end)``."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def parse_moment(value: str, *, param: str) -> datetime:
    """An ISO date (midnight UTC) or datetime (naive means UTC), for a query parameter."""
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), dtime(), tzinfo=UTC)
        else:
            if "T" in text and " " in text:
                # An unescaped "+02:00" in a query string arrives as " 02:00".
                head, _, tail = text.rpartition(" ")
                text = f"{head}+{tail}"
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise invalid_request(
            f"Invalid '{param}': {value!r} is not an ISO 8601 date (2026-11-01) or date-time (2026-11-01T12:00:00Z).",
            param=param,
        ) from None
    except OverflowError:
        moment = EARLIEST - timedelta(days=1)
    if not EARLIEST <= moment < LATEST:
        raise invalid_request(
            f"Invalid '{param}': {value!r} is outside {EARLIEST.year}-{LATEST.year - 1}.", param=param
        )
    return moment


def usage_period(start: str | None, end: str | None, *, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The ``[start, end)`` a usage query covers; the current UTC month by default."""
    month_start, month_end = month_bounds(now or datetime.now(UTC))
    period_start = parse_moment(start, param="start") if start else month_start
    if end:
        period_end = parse_moment(end, param="end")
    elif period_start >= month_end:
        period_end = month_bounds(period_start)[1]
    else:
        period_end = month_end
    if period_end <= period_start:
        raise invalid_request("'end' must be later than 'start'.", param="end")
    return period_start, period_end


# -- queries (synchronous: run them in a worker thread) ------------------------------


def spend_between(engine: Engine, organisation_id: str, start: datetime, end: datetime) -> float:
    with Session(engine) as session:
        total = session.exec(
            select(func.coalesce(func.sum(UsageRecord.cost_usd), 0.0)).where(
                UsageRecord.organisation_id == organisation_id,
                UsageRecord.created_at >= start,  # type: ignore[operator]
                UsageRecord.created_at < end,  # type: ignore[operator]
            )
        ).one()
    return float(total or 0.0)


def usage_summary(engine: Engine, organisation_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Totals and a per-model breakdown of one organisation's usage in ``[start, end)``."""
    with Session(engine) as session:
        rows = session.execute(
            sa_select(
                col(UsageRecord.model),
                func.count(),
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.total_tokens),
                func.sum(UsageRecord.cost_usd),
            )
            .where(
                col(UsageRecord.organisation_id) == organisation_id,
                col(UsageRecord.created_at) >= start,
                col(UsageRecord.created_at) < end,
            )
            .group_by(col(UsageRecord.model))
            .order_by(col(UsageRecord.model))
        ).all()
    breakdown = [
        {
            "model": model,
            "requests": int(requests),
            "prompt_tokens": int(prompt or 0),
            "completion_tokens": int(completion or 0),
            "tokens": int(tokens or 0),
            "cost_usd": round(float(cost or 0.0), 10),
        }
        for model, requests, prompt, completion, tokens, cost in rows
    ]
    return {
        "total_requests": sum(b["requests"] for b in breakdown),
        "total_tokens": sum(b["tokens"] for b in breakdown),
        "total_cost_usd": round(sum(float(cost or 0.0) for *_, cost in rows), 10),
        "breakdown_by_model": breakdown,
    }


# -- reservations ---------------------------------------------------------------------


def plan_reservation(
    settings: Settings, body: Any, *, orchestrated: bool, prompt_parts: Any = (), produces_output: bool = True
) -> Planned:
    """What an admitted request holds of its key's daily tokens and its organisation's budget."""
    rounds = settings.orchestration.max_tool_rounds + 1 if orchestrated else 1
    planned = plan(
        body,
        default_output_tokens=settings.limits.default_reserved_output_tokens,
        rounds=rounds,
        prompt_parts=prompt_parts,
    )
    return planned if produces_output else Planned(planned.prompt_tokens, 0)


def serving_prices(model: ModelConfig, models: Any) -> list[Price | None]:
    """The prices a request for ``model`` may be billed at: its own and its fallbacks'."""
    prices: list[Price | None] = [model.price]
    for fallback_id in model.fallbacks:
        fallback = models(fallback_id)
        if fallback is not None:
            prices.append(fallback.price)
    return prices


# -- the budget guard -----------------------------------------------------------------


def unwritten_cost(rows: list[dict[str, Any]], organisation_id: str, start: datetime, end: datetime) -> float:
    """The cost of an organisation's usage rows in ``[start, end)``; rows refused for bad values count if they can."""
    total = 0.0
    for row in rows:
        created_at, cost = row.get("created_at"), row.get("cost_usd")
        if row.get("organisation_id") != organisation_id or not isinstance(created_at, datetime):
            continue
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        if start <= created_at < end and isinstance(cost, (int, float)) and math.isfinite(cost):
            total += cost
    return total



@dataclass
class _Snapshot:
    period_start: datetime
    database_spend: float
    recorded_mark: float
    expires_at: float
    read: bool = True  # False: the database could not be read, the figure is the last one (or none)


class BudgetGuard:
    """Refuses an organisation's requests once its month's spend reaches ``monthly_budget_usd``."""

    def __init__(
        self, engine: Engine, usage: UsageWriter, *, ttl_s: float = BUDGET_CACHE_TTL_S, hold_ttl_s: float = 900.0
    ) -> None:
        self.engine = engine
        self.usage = usage
        self.ttl_s = ttl_s
        self.hold_ttl_s = hold_ttl_s
        # Costs held by admitted requests until they settle: organisation -> hold id -> (usd, lapses at).
        self._holds: defaultdict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        self._hold_ids = itertools.count(1)
        # Cost recorded by this process, cumulative per organisation (never reset).
        self._recorded: defaultdict[str, float] = defaultdict(float)
        self._snapshots: dict[str, _Snapshot] = {}
        self._refreshing: dict[str, asyncio.Task[_Snapshot]] = {}
        # Organisations whose spend could not be read last time (logged once until it can).
        self._unreadable: set[str] = set()

    def note(self, organisation_id: str, cost_usd: float) -> None:
        """Count a request's cost at once (called when its usage record is made)."""
        if cost_usd and math.isfinite(cost_usd):
            self._recorded[organisation_id] += cost_usd

    async def check(
        self,
        organisation: OrganisationConfig,
        *,
        reserve_usd: float = 0.0,
        within_hold: int | None = None,
        now: datetime | None = None,
    ) -> int | None:
        """402 once spend plus the holds of requests in flight reach the budget; else hold
        ``reserve_usd`` for this request and return the hold's id (None: nothing held).
        ``within_hold`` (a call made inside a running request, MCP sampling) leaves that
        request's own hold out of the check."""
        budget = organisation.monthly_budget_usd
        if budget is None:
            return None
        now = now or datetime.now(UTC)
        spent = await self.month_spend(organisation.id, now=now)
        # No await from here on: reading the holds and adding this one is one step.
        held = self.held(organisation.id)
        if within_hold is not None:
            held -= self._holds[organisation.id].get(within_hold, (0.0, 0.0))[0]
        if spent + held >= budget:
            raise insufficient_credits(organisation.id, budget, spent, month_bounds(now)[1], held_usd=held)
        if not (reserve_usd > 0 and math.isfinite(reserve_usd)):
            return None
        hold_id = next(self._hold_ids)
        # A hold larger than the budget blocks as much as one equal to it.
        self._holds[organisation.id][hold_id] = (min(reserve_usd, budget), time.monotonic() + self.hold_ttl_s)
        return hold_id

    def held(self, organisation_id: str) -> float:
        """What requests in flight hold of the organisation's budget (lapsed holds dropped)."""
        holds = self._holds.get(organisation_id)
        if not holds:
            return 0.0
        now = time.monotonic()
        for hold_id in [h for h, (_, until) in holds.items() if until <= now]:
            del holds[hold_id]
        return sum(usd for usd, _ in holds.values())

    def release(self, organisation_id: str, hold_id: int | None) -> None:
        if hold_id is not None:
            self._holds.get(organisation_id, {}).pop(hold_id, None)

    def settle(self, reservation: Reservation | None, organisation_id: str, cost_usd: float) -> str | None:
        """Count a finished request's real cost and release what it held (once); returns the
        limiter reservation the caller must release with the request's real tokens."""
        # Counted before the hold goes, so spend plus holds never dips below the truth.
        self.note(organisation_id, cost_usd)
        if reservation is None or reservation.settled:
            return None
        reservation.settled = True
        self.release(reservation.organisation_id, reservation.budget_hold)
        return reservation.limit_id

    async def month_spend(self, organisation_id: str, *, now: datetime | None = None) -> float:
        """This UTC month's spend: the database's figure (at most ``ttl_s`` old) plus this process's since."""
        snapshot = await self._snapshot(organisation_id, now)
        return snapshot.database_spend + self._recorded[organisation_id] - snapshot.recorded_mark

    async def database_spend(self, organisation_id: str, *, now: datetime | None = None) -> float:
        """This UTC month's spend as the database showed it (at most ``ttl_s`` ago), with this
        process's rows not yet written: what a limiter that holds budgets adds the rest to (the
        costs every process settled since, see :mod:`runtime.limits.redis_backend`). While the
        database cannot be read, this process's spend since the last figure is added as well."""
        snapshot = await self._snapshot(organisation_id, now)
        if snapshot.read:
            return snapshot.database_spend
        return snapshot.database_spend + self._recorded[organisation_id] - snapshot.recorded_mark

    async def _snapshot(self, organisation_id: str, now: datetime | None) -> _Snapshot:
        period_start = month_bounds(now or datetime.now(UTC))[0]
        snapshot = self._snapshots.get(organisation_id)
        if snapshot is None or snapshot.period_start != period_start or snapshot.expires_at <= time.monotonic():
            snapshot = await self._refresh(organisation_id, period_start)
        return snapshot

    async def _refresh(self, organisation_id: str, period_start: datetime) -> _Snapshot:
        # Concurrent requests of one organisation share one database read.
        task = self._refreshing.get(organisation_id)
        if task is None:
            task = asyncio.create_task(self._read(organisation_id, period_start))
            self._refreshing[organisation_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(organisation_id, None))
        return await asyncio.shield(task)

    async def _read(self, organisation_id: str, period_start: datetime) -> _Snapshot:
        period_end = month_bounds(period_start)[1]
        mark: list[float] = []
        try:
            spend, unwritten = await self.usage.read_with_unwritten(
                lambda: spend_between(self.engine, organisation_id, period_start, period_end),
                marked=lambda: mark.append(self._recorded[organisation_id]),
            )
        except Exception:
            snapshot = self._without_database(organisation_id, period_start)
        else:
            self._unreadable.discard(organisation_id)
            # Recorded before the mark but not in the database: the write failed, or the database refused the row.
            spend += unwritten_cost(unwritten, organisation_id, period_start, period_end)
            snapshot = _Snapshot(period_start, spend, mark[0], time.monotonic() + self.ttl_s)
        self._snapshots[organisation_id] = snapshot
        return snapshot

    def _without_database(self, organisation_id: str, period_start: datetime) -> _Snapshot:
        """The last figure read this period plus this process's spend since; with none, all this process spent."""
        if organisation_id not in self._unreadable:
            self._unreadable.add(organisation_id)
            log.warning(
                "cannot read organisation %s's spend from the database; its budget is checked against "
                "the last figure read plus this process's spend until the database answers",
                organisation_id, exc_info=True,
            )
        previous = self._snapshots.get(organisation_id)
        expires_at = time.monotonic() + self.ttl_s
        if previous is not None and previous.period_start == period_start:
            return _Snapshot(period_start, previous.database_spend, previous.recorded_mark, expires_at, read=False)
        # Nothing read this period: count everything this process recorded (it may include last
        # month's; over-counting is the safe side of a budget).
        return _Snapshot(period_start, 0.0, 0.0, expires_at, read=False)
