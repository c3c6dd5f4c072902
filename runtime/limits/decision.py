"""What a limit check answers, and how that answer reads on the wire.

Both backends (Redis and in-process) count the same things and hand the raw
numbers to :func:`build_decision`, so the two can never drift apart in what
"remaining" or "reset" means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LimitReason = Literal["rpm", "daily_tokens", "budget"]


@dataclass(frozen=True)
class LimitDecision:
    """The outcome of one ``acquire``: allowed or not, and the numbers behind it.

    Fields about a limit are ``None`` when that limit is not set for the key.
    ``reset_*_s`` follow OpenAI's meaning: seconds until that budget is back to
    its initial (full) state. ``retry_after_s`` is the earliest moment a refused
    request could pass, which for a sliding window is usually sooner.
    """

    allowed: bool
    reason: LimitReason | None
    retry_after_s: float | None
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_s: float | None
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_s: float | None
    # Tokens held for this request until it settles (see ``runtime.limits.reservation``), and
    # the id that settles them; None when nothing was reserved.
    reservation_id: str | None = None
    reserved_tokens: int = 0
    # A budget refusal (reason "budget"): what every process holds and settled too recently for
    # the database to show; a budget held with the limits (``budget_held``) settles with the reservation.
    budget_pending_usd: float = 0.0
    budget_held: bool = False

    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for every response, plus ``Retry-After`` on refusal."""
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests or 0)
            out["x-ratelimit-reset-requests"] = format_reset(self.reset_requests_s or 0.0)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens or 0)
            out["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens_s or 0.0)
        if not self.allowed and self.retry_after_s is not None:
            # Never "0": a client told to retry immediately would hammer us at the boundary.
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s - 1e-6)))
            # The official OpenAI SDKs prefer this finer hint over Retry-After.
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000 - 1e-6)))
        return out

    def message(self) -> str:
        """A client-facing sentence for the 429 envelope."""
        wait = format_reset(self.retry_after_s or 0.0)
        if self.reason == "daily_tokens":
            return (
                f"Rate limit reached for tokens per day (limit {self.limit_tokens}). "
                f"Try again in {wait}."
            )
        if self.reason == "rpm":
            return (
                f"Rate limit reached for requests per minute (limit {self.limit_requests}). "
                f"Try again in {wait}."
            )
        return "Request allowed."


UNLIMITED = LimitDecision(
    allowed=True,
    reason=None,
    retry_after_s=None,
    limit_requests=None,
    remaining_requests=None,
    reset_requests_s=None,
    limit_tokens=None,
    remaining_tokens=None,
    reset_tokens_s=None,
)


def format_reset(seconds: float) -> str:
    """Format a duration the way OpenAI's reset headers do (Go durations): ``20ms``, ``1s``, ``6m0s``.

    Rounded up to the millisecond, so the header never promises a reset earlier
    than the real one.
    """
    # The epsilon absorbs float noise such as 0.02 * 1000 == 20.000000000000004.
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def build_decision(
    *,
    allowed: bool,
    rpm: int | None,
    daily_tokens: int | None,
    requests_in_window: int,
    tokens_used: int,
    slot_free_in_s: float,
    window_clear_in_s: float,
    period_end_in_s: float,
    reservation_id: str | None = None,
    reserved_tokens: int = 0,
) -> LimitDecision:
    """Package a backend's raw counts.

    ``requests_in_window`` counts the request itself when it was allowed;
    ``tokens_used`` is today's settled tokens plus what other requests in flight hold
    reserved (not this request's own reservation);
    ``slot_free_in_s`` is how long until a refused request could fit in the window.
    """
    reason: LimitReason | None = None
    retry_after: float | None = None
    if not allowed:
        waits: list[float] = []
        tokens_blocked = daily_tokens is not None and tokens_used >= daily_tokens
        rpm_blocked = rpm is not None and requests_in_window >= rpm
        if rpm_blocked:
            reason = "rpm"
            waits.append(slot_free_in_s)
        if tokens_blocked:
            # The daily wait dominates, so it is the reason worth telling the client.
            reason = "daily_tokens"
            waits.append(period_end_in_s)
        retry_after = max(waits) if waits else None
    return LimitDecision(
        allowed=allowed,
        reason=reason,
        retry_after_s=retry_after,
        limit_requests=rpm,
        # Remaining is between 0 and the limit whatever the counters say (a negative count, say,
        # from an upstream's bad usage, once made it 2^64 - 1 beside a 2^63 - 1 limit).
        remaining_requests=None if rpm is None else min(max(rpm - requests_in_window, 0), rpm),
        reset_requests_s=None if rpm is None else max(window_clear_in_s, 0.0),
        limit_tokens=daily_tokens,
        remaining_tokens=None if daily_tokens is None else min(max(daily_tokens - tokens_used, 0), daily_tokens),
        # Nothing used today means the budget is already in its initial state.
        reset_tokens_s=None
        if daily_tokens is None
        else (max(period_end_in_s, 0.0) if tokens_used > 0 else 0.0),
        reservation_id=reservation_id if allowed else None,
        reserved_tokens=reserved_tokens if allowed and reservation_id else 0,
    )
