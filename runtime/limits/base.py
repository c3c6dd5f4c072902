"""The contract every limiter backend keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from runtime.limits.decision import LimitDecision


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """An organisation's monthly budget, checked and held in the same step as a key's limits
    (by a limiter whose ``holds_budgets`` is true: one shared by every gateway process).

    ``spent_usd`` is this process's figure for the month's settled spend (the database's,
    see :class:`runtime.billing.BudgetGuard`); the limiter adds what every process holds for
    requests in flight and what they settled too recently for the database figure to show.
    """

    organisation_id: str
    budget_usd: float
    spent_usd: float
    reserve_usd: float


class LimiterUnavailable(Exception):
    """The shared limit store did not answer in time or answered with an error.

    The caller refuses the request (``503 rate_limiter_unavailable``): limits
    guard spending, so an unknown state is treated as "no".
    """


@runtime_checkable
class Limiter(Protocol):
    async def acquire(
        self,
        key_id: str,
        *,
        rpm: int | None,
        daily_tokens: int | None,
        reserve_tokens: int = 0,
        within_reservation: str | None = None,
        budget: BudgetAsk | None = None,
    ) -> LimitDecision:
        """Check both limits and, when allowed, count the request and hold ``reserve_tokens``
        of today's tokens for it (``decision.reservation_id``); refusals count nothing.

        A request is refused while settled tokens plus every reservation held reach the cap;
        ``within_reservation`` (a call made inside a running request) leaves that request's
        own reservation out of the check.

        ``budget`` (only for a limiter that ``holds_budgets``) is checked first, in the same
        atomic step: a refusal (``decision.reason == "budget"``) counts nothing; an admitted
        request holds ``budget.reserve_usd`` under the same ``reservation_id``.
        """
        ...

    @property
    def holds_budgets(self) -> bool:
        """Whether budgets are held here (shared by every process) rather than by this process's budget guard."""
        ...

    async def settle_budget(self, organisation_id: str, reservation_id: str, cost_usd: float) -> None:
        """Release a budget hold and count the request's real cost until every process's
        database figure shows it (a limiter that ``holds_budgets``; otherwise nothing)."""
        ...

    async def record_tokens(self, key_id: str, tokens: int, *, reservation_id: str | None = None) -> None:
        """Add a finished call's real token usage to today's counter and release its reservation."""
        ...

    async def ping(self) -> bool:
        """Whether the limit store answers now (for ``/readyz``)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the limiter is not used afterwards."""
        ...
