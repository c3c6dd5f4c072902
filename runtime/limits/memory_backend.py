"""Limits kept in this process's memory: the no-Redis mode.

Single-process only. Each gateway process (``--workers N``) keeps its own
counters, so N processes together let up to N times the limit through. Use a
Redis URL whenever more than one process serves the same keys.

Semantics match the Redis backend exactly: a sliding-window log for RPM and a
per-UTC-day token counter with reservations held by requests in flight (see
``redis_backend`` for the reasoning).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from runtime.limits.base import BudgetAsk
from runtime.limits.decision import UNLIMITED, LimitDecision, build_decision


@dataclass
class _DayTokens:
    """One key's token day: settled tokens and the reservations of requests in flight."""

    period: int
    used: int = 0
    # reservation id -> (tokens, monotonic time after which it lapses)
    held: dict[str, tuple[int, float]] = field(default_factory=dict)

    def reserved(self, now: float) -> int:
        lapsed = [rid for rid, (_, until) in self.held.items() if until <= now]
        for rid in lapsed:
            del self.held[rid]
        return sum(tokens for tokens, _ in self.held.values())


class InProcessLimiter:
    def __init__(
        self, *, window_s: float = 60.0, token_period_s: int = 86_400, reservation_ttl_s: float = 900.0
    ) -> None:
        if window_s <= 0 or token_period_s <= 0 or reservation_ttl_s <= 0:
            raise ValueError("window_s, token_period_s and reservation_ttl_s must be positive")
        self._window_s = window_s
        self._period_s = token_period_s
        self._reservation_ttl_s = reservation_ttl_s
        # A thread lock rather than an asyncio one: the critical sections never
        # await, so this is free under one event loop and still correct if a
        # worker thread with its own loop shares the limiter.
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, _DayTokens] = {}
        # Windows of keys (or client addresses) that went quiet are swept once the map doubles.
        self._sweep_at = 1024

    def _day(self, key_id: str, period: int) -> _DayTokens:
        day = self._tokens.get(key_id)
        if day is None or day.period != period:
            # A new day starts from nothing: yesterday's reservations went with yesterday's count.
            day = self._tokens[key_id] = _DayTokens(period)
        return day

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
        # Budgets are held by the process's budget guard (``holds_budgets`` is false): ``budget`` is never given.
        if rpm is None and daily_tokens is None:
            return UNLIMITED
        # Monotonic for the window (immune to clock steps), wall clock for the UTC day.
        now = time.monotonic()
        wall = time.time()
        period = int(wall // self._period_s)
        period_end_in = (period + 1) * self._period_s - wall
        with self._lock:
            used = 0
            day = None
            if daily_tokens is not None:
                day = self._day(key_id, period)
                used = day.used + day.reserved(now)
                if within_reservation is not None:
                    used -= day.held.get(within_reservation, (0, 0.0))[0]
            log = self._requests.get(key_id)
            if rpm is not None:
                if log is None:
                    if len(self._requests) >= self._sweep_at:
                        self._sweep(now)
                    log = self._requests[key_id] = deque()
                horizon = now - self._window_s
                while log and log[0] <= horizon:
                    log.popleft()
            count = len(log) if (rpm is not None and log is not None) else 0
            allowed = not (
                (rpm is not None and count >= rpm)
                or (daily_tokens is not None and used >= daily_tokens)
            )
            if allowed and rpm is not None and log is not None:
                log.append(now)
                count += 1
            reservation_id = None
            if allowed and day is not None and reserve_tokens > 0:
                reservation_id = secrets.token_hex(8)
                day.held[reservation_id] = (reserve_tokens, now + self._reservation_ttl_s)
            slot_free_in = clear_in = 0.0
            if rpm is not None and log is not None:
                if log:
                    clear_in = log[-1] + self._window_s - now
                if count >= rpm:
                    slot_free_in = (
                        log[count - rpm] + self._window_s - now if rpm > 0 else self._window_s
                    )
                if not log:
                    # Keys that went quiet should not keep an empty deque forever.
                    del self._requests[key_id]
        return build_decision(
            allowed=allowed,
            rpm=rpm,
            daily_tokens=daily_tokens,
            requests_in_window=count,
            tokens_used=used,
            slot_free_in_s=slot_free_in,
            window_clear_in_s=clear_in,
            period_end_in_s=period_end_in,
            reservation_id=reservation_id,
            reserved_tokens=reserve_tokens,
        )

    def _sweep(self, now: float) -> None:
        """Drop the windows with nothing in the last minute (callers hold the lock)."""
        horizon = now - self._window_s
        for key_id in [key for key, log in self._requests.items() if not log or log[-1] <= horizon]:
            del self._requests[key_id]
        self._sweep_at = max(1024, 2 * len(self._requests))

    async def record_tokens(self, key_id: str, tokens: int, *, reservation_id: str | None = None) -> None:
        period = int(time.time() // self._period_s)
        with self._lock:
            day = self._day(key_id, period)
            if reservation_id is not None:
                day.held.pop(reservation_id, None)
            if tokens > 0:
                day.used += tokens

    @property
    def holds_budgets(self) -> bool:
        return False

    async def settle_budget(self, organisation_id: str, reservation_id: str, cost_usd: float) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
