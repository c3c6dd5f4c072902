"""Limits kept in this process's memory: the no-Redis mode.

Single-process only. Each gateway process (``--workers N``) keeps its own
counters, so N processes together let up to N times the limit through. Use a
Redis URL whenever more than one process serves the same keys.

Semantics match the Redis backend exactly: a sliding-window log for RPM and a
per-UTC-day token counter (see ``redis_backend`` for the reasoning).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from runtime.limits.decision import UNLIMITED, LimitDecision, build_decision


class InProcessLimiter:
    def __init__(self, *, window_s: float = 60.0, token_period_s: int = 86_400) -> None:
        if window_s <= 0 or token_period_s <= 0:
            raise ValueError("window_s and token_period_s must be positive")
        self._window_s = window_s
        self._period_s = token_period_s
        # A thread lock rather than an asyncio one: the critical sections never
        # await, so this is free under one event loop and still correct if a
        # worker thread with its own loop shares the limiter.
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, tuple[int, int]] = {}  # key -> (period index, tokens used)

    async def acquire(
        self, key_id: str, *, rpm: int | None, daily_tokens: int | None
    ) -> LimitDecision:
        if rpm is None and daily_tokens is None:
            return UNLIMITED
        # Monotonic for the window (immune to clock steps), wall clock for the UTC day.
        now = time.monotonic()
        wall = time.time()
        period = int(wall // self._period_s)
        period_end_in = (period + 1) * self._period_s - wall
        with self._lock:
            used = 0
            if daily_tokens is not None:
                stored_period, stored_used = self._tokens.get(key_id, (period, 0))
                used = stored_used if stored_period == period else 0
            log = self._requests.get(key_id)
            if rpm is not None:
                if log is None:
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
        )

    async def record_tokens(self, key_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        period = int(time.time() // self._period_s)
        with self._lock:
            stored_period, stored_used = self._tokens.get(key_id, (period, 0))
            base = stored_used if stored_period == period else 0
            self._tokens[key_id] = (period, base + tokens)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
