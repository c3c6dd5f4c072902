"""Per-key rate limits: requests per minute and tokens per UTC day, fail closed.

Usage by the HTTP layer::

    limiter = create_limiter(settings.redis_url, timeout_s=settings.limits.redis_timeout_s)
    try:
        decision = await limiter.acquire(key.id, rpm=key.rpm, daily_tokens=key.daily_tokens, reserve_tokens=n)
    except LimiterUnavailable:
        ...  # 503 rate_limiter_unavailable
    if not decision.allowed:
        ...  # 429 rate_limit_exceeded, message decision.message(), headers decision.headers()
    ...  # call the model; add decision.headers() to the response
    await limiter.record_tokens(key.id, usage.total_tokens, reservation_id=decision.reservation_id)  # after the call, however it ended

With a Redis URL limits are global across processes (one atomic script call per
check). Without one they live in this process only: correct for a single
``plugway serve`` process, not for ``--workers N`` or several hosts.
"""

from __future__ import annotations

from runtime.limits.base import BudgetAsk, Limiter, LimiterUnavailable
from runtime.limits.decision import LimitDecision, LimitReason, format_reset
from runtime.limits.memory_backend import InProcessLimiter
from runtime.limits.redis_backend import RedisLimiter

__all__ = [
    "BudgetAsk",
    "InProcessLimiter",
    "LimitDecision",
    "LimitReason",
    "Limiter",
    "LimiterUnavailable",
    "RedisLimiter",
    "create_limiter",
    "format_reset",
]


def create_limiter(
    redis_url: str | None,
    *,
    timeout_s: float = 0.25,
    key_prefix: str = "plugway:",
    window_s: float = 60.0,
    token_period_s: int = 86_400,
    reservation_ttl_s: float = 900.0,
    budget_visibility_s: float = 5.0,
) -> Limiter:
    """A Redis-backed limiter for a URL, else an in-process one. Connects lazily.

    ``window_s`` (the RPM window) and ``token_period_s`` (the token day) exist
    so tests can shrink time; production keeps the defaults. ``budget_visibility_s``
    is how long a settled cost counts in Redis before every process's database figure
    shows it (see :mod:`runtime.limits.redis_backend`).
    """
    if redis_url:
        return RedisLimiter(
            redis_url,
            timeout_s=timeout_s,
            key_prefix=key_prefix,
            window_s=window_s,
            token_period_s=token_period_s,
            reservation_ttl_s=reservation_ttl_s,
            budget_visibility_s=budget_visibility_s,
        )
    return InProcessLimiter(window_s=window_s, token_period_s=token_period_s, reservation_ttl_s=reservation_ttl_s)
