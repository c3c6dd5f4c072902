"""Usage accounting: every upstream call and every tool call that may cost anything is recorded here.

One function, :meth:`Ledger.record`, whichever door the work came through (a
run of the loop, a native Messages call, embeddings, MCP sampling, a ``/mcp``
tool call, the console's tool call): the usage row with its cost, the
organisation's budget note, metrics and the request's trace and log line
(``Telemetry.usage_recorded``), and the key's daily-token count. The other
methods only say what a run or a tool call is billed as.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from runtime.config import Price
from runtime.limits import Limiter, LimiterUnavailable
from runtime.limits.reservation import Reservation
from runtime.request import REQUESTED_MODEL, RequestContext, RunState, ToolsContext
from runtime.storage.keys import KeyInfo
from runtime.storage.usage import UsageWriter, cost_usd
from runtime.telemetry import current as telemetry
from runtime.telemetry.core import UsageLabels

log = logging.getLogger("plugway")


class BudgetNotes(Protocol):
    def settle(self, reservation: Reservation | None, organisation_id: str, cost_usd: float) -> str | None:
        """Note the spend the budget check must see before the database has the row, and release
        what the work held (once); returns the limiter reservation to release with the real tokens."""
        ...


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is built per request.
@dataclass(slots=True)
class Charge:
    """One piece of work to bill."""

    request_id: str
    organisation_id: str
    key: KeyInfo | None
    source: str
    model: str  # the model asked for; a tool call run on its own: the tool's public name
    status: str
    latency_ms: float
    price: Price | None = None  # None: nothing is paid per token (a tool call, an unpriced model)
    endpoint: str | None = None
    provider: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    rounds: int = 0
    orchestrated: bool = False
    tool_calls: int = 0
    tool_failures: int = 0
    requested_model: str | None = None  # the name the client sent, when an alias of ``model``
    served_model: str | None = None  # the model that answered (a fallback's, say)
    reservation: Reservation | None = None  # what admission held, settled here


class Ledger:
    def __init__(self, *, usage: UsageWriter, budget: BudgetNotes, limiter: Limiter) -> None:
        self.usage = usage
        self.budget = budget
        self.limiter = limiter
        # Daily-token counts still being written (awaited when the gateway closes).
        self.background: set[asyncio.Task[None]] = set()

    def record(self, charge: Charge) -> float:
        """Record one charge (see the module docstring); returns its cost in USD."""
        cost = cost_usd(charge.price, charge.prompt_tokens, charge.completion_tokens)
        # billing: count the real cost and release what admission reserved (runtime/billing.py).
        limit_reservation = self.budget.settle(charge.reservation, charge.organisation_id, cost)
        key_id = charge.key.id if charge.key is not None else None
        self.usage.record(
            request_id=charge.request_id,
            organisation_id=charge.organisation_id,
            key_id=key_id,
            source=charge.source,
            endpoint=charge.endpoint,
            model=charge.model,
            requested_model=charge.requested_model,
            provider=charge.provider,
            prompt_tokens=charge.prompt_tokens,
            completion_tokens=charge.completion_tokens,
            total_tokens=charge.total_tokens,
            cost_usd=cost,
            rounds=charge.rounds,
            tool_calls=charge.tool_calls,
            latency_ms=charge.latency_ms,
            status=charge.status,
        )
        labels = UsageLabels(
            organisation=charge.organisation_id,
            model=charge.model,
            key_id=key_id,
            source=charge.source,
            provider=charge.provider,
            prompt_tokens=charge.prompt_tokens,
            completion_tokens=charge.completion_tokens,
            rounds=charge.rounds,
            orchestrated=charge.orchestrated,
            tool_calls=charge.tool_calls,
            tool_failures=charge.tool_failures,
            endpoint=charge.endpoint,
            served_model=charge.served_model,
        )
        telemetry().usage_recorded(labels, cost, charge.status)
        self._settle_limits(charge.key, charge.reservation, limit_reservation, charge.total_tokens, cost)
        return cost

    def release(self, ctx: RequestContext) -> None:
        """Give back what admission held for a request refused before anything was spent (an
        endpoint's input check, say): nothing is recorded, the holds go at once rather than lapse."""
        reservation = ctx.reservation
        limit_reservation = self.budget.settle(reservation, ctx.organisation.id, 0.0)
        self._settle_limits(ctx.key, reservation, limit_reservation, 0, 0.0)

    def _settle_limits(
        self, key: KeyInfo | None, reservation: Reservation | None, limit_reservation: str | None, tokens: int, cost: float
    ) -> None:
        """Count the key's daily tokens and settle what the limiter held (Redis: one batch, no extra round trip)."""
        count = key is not None and key.daily_tokens is not None and bool(tokens or limit_reservation)
        budget_org = (
            reservation.organisation_id
            if limit_reservation is not None and reservation is not None and reservation.budget_in_limiter
            else None
        )
        if not count and budget_org is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._count_tokens(key.id if count and key is not None else None, tokens, limit_reservation, budget_org, cost)
        )
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def record_run(self, ctx: RequestContext, state: RunState, *, price: Price | None, started: float, status: str) -> float:
        """A run of the loop or a single upstream call; ``price`` is the served model's."""
        state.count_unbilled()
        usage = state.usage
        return self.record(
            Charge(
                request_id=state.request_id,
                organisation_id=ctx.organisation.id,
                key=ctx.key,
                source=ctx.source,
                endpoint=ctx.endpoint,
                model=ctx.model.id,
                requested_model=ctx.extra.get(REQUESTED_MODEL),
                served_model=state.route.model,
                reservation=ctx.reservation,
                provider=state.route.provider,
                price=price,
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                total_tokens=usage["total_tokens"],
                rounds=state.rounds,
                orchestrated=state.orchestrated,
                tool_calls=state.tools_started,
                tool_failures=sum(1 for call in state.tool_calls if not call.get("ok", True)),
                latency_ms=(time.perf_counter() - started) * 1000,
                status=status,
            )
        )

    def record_tool_call(self, ctx: ToolsContext, tool: str, *, started: float, status: str) -> float:
        """A tool called on its own (``/mcp``, the console): the row names the tool where a run names its model."""
        return self.record(
            Charge(
                request_id=ctx.request_id,
                organisation_id=ctx.organisation.id,
                key=ctx.key,
                source=ctx.source,
                model=tool,
                tool_calls=1,
                tool_failures=0 if status == "ok" else 1,
                latency_ms=(time.perf_counter() - started) * 1000,
                status=status,
            )
        )

    async def _count_tokens(
        self, key_id: str | None, tokens: int, reservation_id: str | None, budget_org: str | None, cost: float
    ) -> None:
        try:
            counts = []
            if key_id is not None:
                counts.append(self.limiter.record_tokens(key_id, tokens, reservation_id=reservation_id))
            if budget_org is not None and reservation_id is not None:
                counts.append(self.limiter.settle_budget(budget_org, reservation_id, cost))
            # Both join the limiter's next batch: one round trip.
            await (counts[0] if len(counts) == 1 else asyncio.gather(*counts))
        except LimiterUnavailable:
            # The usage record is still written; the daily counter misses these tokens, and other
            # processes see this cost once the database has it (the hold lapses).
            telemetry().limiter_unavailable("record_tokens")
            log.error("could not count %d tokens for key %s: rate limiter unavailable", tokens, key_id)
