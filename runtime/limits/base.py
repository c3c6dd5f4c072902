"""The contract every limiter backend keeps."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from runtime.limits.decision import LimitDecision


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
    ) -> LimitDecision:
        """Check both limits and, when allowed, count the request and hold ``reserve_tokens``
        of today's tokens for it (``decision.reservation_id``); refusals count nothing.

        A request is refused while settled tokens plus every reservation held reach the cap;
        ``within_reservation`` (a call made inside a running request) leaves that request's
        own reservation out of the check.
        """
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
