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
        self, key_id: str, *, rpm: int | None, daily_tokens: int | None
    ) -> LimitDecision:
        """Check both limits and, when allowed, count the request; refusals count nothing."""
        ...

    async def record_tokens(self, key_id: str, tokens: int) -> None:
        """Add a finished call's real token usage to today's counter."""
        ...

    async def ping(self) -> bool:
        """Whether the limit store answers now (for ``/readyz``)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the limiter is not used afterwards."""
        ...
