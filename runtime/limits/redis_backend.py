"""Limits shared by every gateway process through Redis.

RPM algorithm: a sliding-window log. Each allowed request is a member of a
sorted set scored by its Redis-server timestamp (ms); a request is allowed when
fewer than ``rpm`` members are younger than the window. Why this one:

- exact: "at most rpm in any 60 s" holds for every window, with no 2x burst at
  a minute boundary as a fixed window allows, and no estimation error as the
  weighted two-window counter has;
- the cost is memory, O(rpm) members per active key (about 60 bytes each),
  which is fine for per-key RPMs in the thousands.

Daily tokens: a hash ``{p: UTC-day index, used: settled tokens, held: tokens
reserved by requests in flight, r:<id>: each reservation}`` that expires at the
end of the day; a request is refused while ``used + held >= cap``, and an
admitted one adds its reservation to ``held`` in the same script call (so no
burst can be admitted on a count that in-flight requests are about to raise).
Settling removes the reservation and adds the real figure. A sorted set of
reservation deadlines lets a reservation whose process died lapse after
``reservation_ttl_s``. The day index lives in the value, not the key name, so
every key of a gateway key is declared to the script (and they share a
``{hash tag}`` slot, which keeps it Redis-Cluster-safe).

Monthly budgets (``holds_budgets``): when the organisation has a budget, the
same script call checks it first and holds the request's largest cost, in an
organisation's hash ``{held, recent, r:<id>: each hold, s:<second>: costs
settled in that second}`` (nano-dollars, integers) with a sorted set of
deadlines. A request is refused (nothing counted, RPM included) while

    spent (the caller's database figure) + held + recent >= budget

Settling (:meth:`RedisLimiter.settle_budget`, riding the next batch with the
token counts) removes the hold and adds the real cost to ``recent``, where it
stays ``budget_visibility_s``: long enough for the usage writer to flush the row
and every process's cached database figure to expire, so every process sees
every settled cost at once, in one figure or the other (for that while a cost
may be counted in both: the safe side). Holds lapse like token reservations.
The budget's keys are tagged by organisation, the key's by key: the script spans
two slots, which a single Redis (what plugway's client speaks to) does not mind.

Time comes from Redis ``TIME`` inside the scripts, so gateway hosts with skewed
clocks still agree. Each check is one atomic script call (EVALSHA, EVAL once
after a Redis restart flushed the script cache); nothing is counted when a
request is refused.

Failure handling is fail-closed: any error or a reply slower than ``timeout_s``
raises :class:`LimiterUnavailable`. A timed-out check may still run on the
server later (a hung Redis that resumes): that can only over-count, never let
extra requests through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import secrets
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from runtime.futures import retrieve_quietly
from runtime.limits.base import BudgetAsk, LimiterUnavailable
from runtime.limits.decision import UNLIMITED, LimitDecision, build_decision

# What a budget refusal answers (the 402 is built by admission, which knows the budget).
BUDGET_SPENT = dataclasses.replace(UNLIMITED, allowed=False, reason="budget")


def _nano_up(usd: float) -> int:
    """Dollars as whole nano-dollars, rounded up (a hold or a cost is never under-counted)."""
    return min(max(0, math.ceil(usd * NANO_USD)), MAX_NANO) if math.isfinite(usd) else 0

# Numbers cross into Lua as strings formatted with 14 significant digits, so
# timestamps stay in milliseconds (13 digits) to remain exact.
ACQUIRE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local rpm = tonumber(ARGV[1])
local window_ms = @WINDOW_MS@
local cap = tonumber(ARGV[2])
local period_s = @PERIOD_S@
local reserve = tonumber(ARGV[4])
local reservation_ttl_ms = @RESERVATION_TTL_MS@
local budget_stay_ms = @BUDGET_VISIBILITY_MS@
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = math.floor(now_s / period_s)
local period_end_ms = (period + 1) * period_s * 1000 - now_ms

-- the organisation's budget first: a refusal counts nothing (KEYS[4], KEYS[5] given only with a budget)
local pending = 0
if #KEYS > 3 then
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms)
  for _, field in ipairs(lapsed) do
    local amount = redis.call('HGET', KEYS[4], field)
    if amount then
      local total = 'held'
      if string.sub(field, 1, 2) == 's:' then total = 'recent' end
      redis.call('HINCRBY', KEYS[4], total, '-' .. amount)
      redis.call('HDEL', KEYS[4], field)
    end
  end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now_ms)
  end
  local totals = redis.call('HMGET', KEYS[4], 'held', 'recent')
  pending = (tonumber(totals[1]) or 0) + (tonumber(totals[2]) or 0)
  if ARGV[5] ~= '' then
    pending = pending - (tonumber(redis.call('HGET', KEYS[4], 'r:' .. ARGV[5])) or 0)
  end
  if tonumber(ARGV[7]) + pending >= tonumber(ARGV[6]) then
    return {0, 0, 0, 0, 0, 0, '', 1, pending}
  end
end

local used = 0
-- today's hash exists (and expires at the day's end, set when it was made)
local today = false
if cap >= 0 then
  local stored = redis.call('HMGET', KEYS[2], 'p', 'used', 'held')
  if stored[1] and tonumber(stored[1]) == period then
    today = true
    local held = tonumber(stored[3]) or 0
    if held > 0 then
      -- reservations that were never settled (their process died) lapse
      local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)
      for _, id in ipairs(lapsed) do
        local amount = redis.call('HGET', KEYS[2], 'r:' .. id)
        if amount then
          held = redis.call('HINCRBY', KEYS[2], 'held', '-' .. amount)
          redis.call('HDEL', KEYS[2], 'r:' .. id)
        end
      end
      if #lapsed > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
      end
    end
    if ARGV[5] ~= '' then
      -- a call made inside a request (MCP sampling) is not held back by that request's own reservation
      held = held - (tonumber(redis.call('HGET', KEYS[2], 'r:' .. ARGV[5])) or 0)
    end
    used = (tonumber(stored[2]) or 0) + held
  elseif stored[1] then
    -- yesterday's count, and the reservations made in it, end with yesterday
    redis.call('DEL', KEYS[2], KEYS[3])
  end
end

local count = 0
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
  count = redis.call('ZCARD', KEYS[1])
end

local allowed = 1
if (rpm >= 0 and count >= rpm) or (cap >= 0 and used >= cap) then
  allowed = 0
end
if allowed == 1 and rpm >= 0 then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window_ms)
  count = count + 1
end
local reservation = ''
if allowed == 1 and cap >= 0 and reserve > 0 then
  reservation = ARGV[3]
  local day_end = (period + 1) * period_s
  if today then
    redis.call('HINCRBY', KEYS[2], 'held', ARGV[4])
    redis.call('HSET', KEYS[2], 'r:' .. reservation, ARGV[4])
  else
    -- the day's first count (yesterday's hash went above)
    redis.call('HSET', KEYS[2], 'p', period, 'held', ARGV[4], 'r:' .. reservation, ARGV[4])
    redis.call('EXPIREAT', KEYS[2], day_end)
  end
  -- the deadlines' set goes when its last member does: its expiry is set again each time
  redis.call('ZADD', KEYS[3], now_ms + reservation_ttl_ms, reservation)
  redis.call('EXPIREAT', KEYS[3], day_end)
end
if allowed == 1 and #KEYS > 3 and tonumber(ARGV[8]) > 0 then
  reservation = ARGV[3]
  redis.call('HINCRBY', KEYS[4], 'held', ARGV[8])
  redis.call('HSET', KEYS[4], 'r:' .. reservation, ARGV[8])
  redis.call('ZADD', KEYS[5], now_ms + reservation_ttl_ms, 'r:' .. reservation)
  redis.call('PEXPIRE', KEYS[4], reservation_ttl_ms + budget_stay_ms)
  redis.call('PEXPIRE', KEYS[5], reservation_ttl_ms + budget_stay_ms)
end

local slot_free_ms = 0
local clear_ms = 0
if rpm >= 0 then
  if allowed == 1 then
    -- this request is the newest in the log
    clear_ms = window_ms
  elseif count > 0 then
    local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    clear_ms = tonumber(newest[2]) + window_ms - now_ms
  end
  if count >= rpm then
    if rpm > 0 then
      -- a slot opens when all but rpm-1 of the logged requests have aged out
      local blocker = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
      slot_free_ms = tonumber(blocker[2]) + window_ms - now_ms
    else
      slot_free_ms = window_ms
    end
  end
end
return {allowed, count, used, slot_free_ms, clear_ms, period_end_ms, reservation, 0, pending}
"""

# KEYS: the day's hash, the reservation deadlines. ARGV: tokens, then the
# reservation ids this count settles (their held tokens are released).
RECORD_TOKENS_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local period_s = @PERIOD_S@
local now_s = tonumber(redis.call('TIME')[1])
local period = math.floor(now_s / period_s)
local stored = redis.call('HGET', KEYS[1], 'p')
local used
if stored and tonumber(stored) == period then
  for i = 2, #ARGV do
    local amount = redis.call('HGET', KEYS[1], 'r:' .. ARGV[i])
    if amount then
      redis.call('HINCRBY', KEYS[1], 'held', '-' .. amount)
      redis.call('HDEL', KEYS[1], 'r:' .. ARGV[i])
      redis.call('ZREM', KEYS[2], ARGV[i])
    end
  end
  used = redis.call('HINCRBY', KEYS[1], 'used', ARGV[1])
else
  -- a reservation made yesterday went with yesterday's count
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'p', period, 'used', ARGV[1])
  redis.call('EXPIREAT', KEYS[1], (period + 1) * period_s)
  used = tonumber(ARGV[1])
end
return used
"""


# KEYS: the organisation's budget hash and deadlines. ARGV: (reservation id, real cost in
# nano-dollars) pairs. How long a settled cost stays and how long the keys live (ms) are the limiter's.
SETTLE_BUDGET_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stay_ms = @BUDGET_VISIBILITY_MS@
-- settled costs are kept per second of their deadline: one field per second, however busy
local second = math.ceil((now_ms + stay_ms) / 1000)
local field = 's:' .. second
local cost = 0
for i = 1, #ARGV, 2 do
  local amount = redis.call('HGET', KEYS[1], 'r:' .. ARGV[i])
  if amount then
    redis.call('HINCRBY', KEYS[1], 'held', '-' .. amount)
    redis.call('HDEL', KEYS[1], 'r:' .. ARGV[i])
    redis.call('ZREM', KEYS[2], 'r:' .. ARGV[i])
  end
  cost = cost + tonumber(ARGV[i + 1])
end
if cost > 0 then
  redis.call('HINCRBY', KEYS[1], field, cost)
  redis.call('HINCRBY', KEYS[1], 'recent', cost)
  redis.call('ZADD', KEYS[2], second * 1000, field)
end
redis.call('PEXPIRE', KEYS[1], @RESERVATION_TTL_MS@ + stay_ms)
redis.call('PEXPIRE', KEYS[2], @RESERVATION_TTL_MS@ + stay_ms)
return cost
"""

# Budgets cross into Redis as integer nano-dollars: exact in Lua's doubles up to $9 million.
NANO_USD = 1_000_000_000
# The largest hold or cost sent: Redis's 64-bit HINCRBY never overflows adding a few.
MAX_NANO = 2**52


class _Script:
    """A script with one limiter's settings written into it (``@NAME@``): settings that never
    change are not arguments for redis-py to pack on every call."""

    __slots__ = ("sha", "source")

    def __init__(self, template: str, settings: dict[str, int]) -> None:
        source = template
        for name, value in settings.items():
            source = source.replace(f"@{name}@", str(int(value)))
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()


def _b(value: int) -> bytes:
    # Arguments go to redis-py as bytes: it passes them through as they are.
    return b"%d" % value


class RedisLimiter:
    def __init__(
        self,
        redis_url: str,
        *,
        timeout_s: float = 0.25,
        key_prefix: str = "plugway:",
        window_s: float = 60.0,
        token_period_s: int = 86_400,
        reservation_ttl_s: float = 900.0,
        budget_visibility_s: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        if timeout_s <= 0 or window_s <= 0 or token_period_s <= 0 or reservation_ttl_s <= 0:
            raise ValueError("timeout_s, window_s, token_period_s and reservation_ttl_s must be positive")
        self._reservation_ttl_ms = max(1, round(reservation_ttl_s * 1000))
        self._budget_visibility_ms = max(1, round(budget_visibility_s * 1000))
        self._timeout_s = timeout_s
        self._prefix = key_prefix
        self._window_ms = max(1, round(window_s * 1000))
        self._period_s = int(token_period_s)
        # redis-py's default retries (10, with backoff) would blow through the
        # deadline. One immediate retry on a connection error lets a pooled
        # socket that died with a restarted Redis reconnect inside the same call;
        # timeouts are not retried, a hung server gets no second chance.
        pool = BlockingConnectionPool.from_url(
            redis_url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
        )
        self._redis = Redis.from_pool(pool)
        settings = {
            "WINDOW_MS": self._window_ms,
            "PERIOD_S": self._period_s,
            "RESERVATION_TTL_MS": self._reservation_ttl_ms,
            "BUDGET_VISIBILITY_MS": self._budget_visibility_ms,
        }
        self._acquire_script = _Script(ACQUIRE_LUA, settings)
        self._record_tokens_script = _Script(RECORD_TOKENS_LUA, settings)
        self._settle_budget_script = _Script(SETTLE_BUDGET_LUA, settings)
        self._key_names: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._batch: _Batch | None = None  # calls waiting for the batch on its way
        self._in_flight: asyncio.Future[None] | None = None  # set once that batch is answered
        self._releases: set[asyncio.Task[None]] = set()  # reservations given back after a timed-out check

    def _keys(self, key_id: str) -> tuple[bytes, bytes, bytes]:
        names = self._key_names.get(key_id)
        if names is None:
            tagged = f"{self._prefix}rl:{{{key_id}}}"
            names = (f"{tagged}:req".encode(), f"{tagged}:tok".encode(), f"{tagged}:held".encode())
            if len(self._key_names) >= MAX_CACHED_KEY_NAMES:
                self._key_names.clear()
            self._key_names[key_id] = names
        return names

    def _budget_keys(self, organisation_id: str) -> tuple[bytes, bytes]:
        tagged = f"{self._prefix}budget:{{{organisation_id}}}"
        return tagged.encode(), f"{tagged}:deadlines".encode()

    @property
    def holds_budgets(self) -> bool:
        return True

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
        if rpm is None and daily_tokens is None and budget is None:
            # Nothing to enforce, so no reason to depend on Redis being up.
            return UNLIMITED
        request_id = secrets.token_hex(8)
        keys: tuple[bytes, ...] = self._keys(key_id)
        args: tuple[bytes, ...] = (
            _b(-1 if rpm is None else rpm),
            _b(-1 if daily_tokens is None else daily_tokens),
            request_id.encode(),
            _b(max(0, int(reserve_tokens))),
            (within_reservation or "").encode(),
        )
        budget_reserve = 0
        if budget is not None:
            keys += self._budget_keys(budget.organisation_id)
            cap = math.floor(budget.budget_usd * NANO_USD)
            # A hold larger than the budget blocks as much as one equal to it.
            budget_reserve = min(_nano_up(budget.reserve_usd), cap, MAX_NANO)
            args += (_b(cap), _b(_nano_up(budget.spent_usd)), _b(budget_reserve))
        try:
            reply = await self._run(self._acquire_script, keys, args)
        except LimiterUnavailable:
            if (reserve_tokens > 0 and daily_tokens is not None) or budget_reserve > 0:
                # The script may still run (a slow Redis): give back what it would hold, rather
                # than let the key stay blocked until the reservation lapses.
                self._release_later(key_id, request_id, budget.organisation_id if budget is not None and budget_reserve else None)
            raise
        allowed, count, used, slot_free_ms, clear_ms, period_end_ms = (int(v) for v in reply[:6])
        reservation_id = reply[6].decode() if isinstance(reply[6], bytes) else (reply[6] or None)
        if int(reply[7]):
            return dataclasses.replace(BUDGET_SPENT, budget_pending_usd=int(reply[8]) / NANO_USD)
        decision = build_decision(
            allowed=bool(allowed),
            rpm=rpm,
            daily_tokens=daily_tokens,
            requests_in_window=count,
            tokens_used=used,
            slot_free_in_s=slot_free_ms / 1000,
            window_clear_in_s=clear_ms / 1000,
            period_end_in_s=period_end_ms / 1000,
            reservation_id=reservation_id or None,
            reserved_tokens=int(reserve_tokens),
        )
        if reservation_id and budget_reserve > 0:
            decision = dataclasses.replace(decision, budget_held=True)
        return decision

    async def settle_budget(self, organisation_id: str, reservation_id: str, cost_usd: float) -> None:
        """Release a budget hold and count the real cost in ``recent``; rides the next batch."""
        batch = self._next_batch(urgent=False)
        cost = _nano_up(cost_usd) if cost_usd > 0 and math.isfinite(cost_usd) else 0
        batch.budgets.setdefault(organisation_id, []).extend((reservation_id.encode(), _b(cost)))
        await self._wait(batch.tokens_done)

    async def record_tokens(self, key_id: str, tokens: int, *, reservation_id: str | None = None) -> None:
        """Add tokens to the key's counter, releasing a reservation; returns once Redis has counted them.

        Counts made while a batch is on its way are summed per key and ride
        along with the next batch (see :meth:`_next_batch`).
        """
        tokens = max(0, int(tokens))
        if tokens == 0 and reservation_id is None:
            return
        batch = self._next_batch(urgent=False)
        batch.tokens[key_id] = batch.tokens.get(key_id, 0) + tokens
        if reservation_id is not None:
            batch.releases.setdefault(key_id, []).append(reservation_id.encode())
        await self._wait(batch.tokens_done)

    def _release_later(self, key_id: str, reservation_id: str, organisation_id: str | None = None) -> None:
        async def release() -> None:
            with contextlib.suppress(LimiterUnavailable):
                if organisation_id is not None:
                    await self.settle_budget(organisation_id, reservation_id, 0.0)
                await self.record_tokens(key_id, 0, reservation_id=reservation_id)

        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: _Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """Run one script call in the next batch and return its reply."""
        batch = self._next_batch(urgent=True)
        reply = asyncio.get_running_loop().create_future()
        batch.calls.append((script, keys, args, reply))
        # The reply is this caller's alone (no shield): a caller that times out or is cancelled
        # cancels it, and the batch's answer passes it by.
        try:
            async with asyncio.timeout(self._timeout_s):
                return await reply
        except TimeoutError as exc:
            raise LimiterUnavailable(f"Redis did not answer within {self._timeout_s:g}s") from exc

    # -- batching -----------------------------------------------------------------------
    #
    # One batch is on the wire at a time, as one pipeline (no MULTI: each script is atomic
    # on its own). Token counts and releases run first, then the limit checks in the order
    # they were asked for, so a check never misses a hold given back. Every call made meanwhile
    # joins the next batch, so under load a process pays one round trip, one pooled
    # connection and one reply parse per batch rather than per request; an idle process
    # sends a lone call at once. Each caller still waits at most ``timeout_s``: a batch
    # that answers later can only over-count (a refused caller's slot), never let extra
    # requests through.

    def _next_batch(self, *, urgent: bool) -> _Batch:
        """The batch a call joins. Limit checks go out at once; a batch of token counts alone
        waits ``TOKEN_COUNT_DELAY_S`` for a limit check to ride along with (a request that
        follows another pays one round trip, not a second one behind the previous count)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            if not urgent:
                batch.timer = asyncio.get_running_loop().call_later(TOKEN_COUNT_DELAY_S, self._start, batch)
                return batch
        if urgent and not batch.started:
            self._start(batch)
        return batch

    def _start(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        batch.started = True
        asyncio.get_running_loop().create_task(self._send_after(self._in_flight, batch))

    async def _wait(self, future: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.shield(future)
        except TimeoutError as exc:
            raise LimiterUnavailable(f"Redis did not answer within {self._timeout_s:g}s") from exc

    async def _send_after(self, previous: asyncio.Future[None] | None, batch: _Batch) -> None:
        if previous is not None:
            await asyncio.wait((previous,))
        self._batch = None
        self._in_flight = batch.sent
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._execute(batch.commands(self))
        except TimeoutError:
            batch.fail(LimiterUnavailable(f"Redis did not answer within {self._timeout_s:g}s"))
        except (RedisError, OSError) as exc:
            batch.fail(LimiterUnavailable(f"Redis error: {exc}"))
        except BaseException as exc:
            batch.fail(LimiterUnavailable(f"Redis call interrupted: {exc!r}"))
            raise
        else:
            batch.answer(replies)
        finally:
            batch.sent.set_result(None)

    async def _execute(self, commands: list[tuple[_Script, Sequence[bytes], Sequence[bytes]]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args in commands:
                pipe.execute_command("EVALSHA", script.sha, _b(len(keys)), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # Script cache flushed (restart, SCRIPT FLUSH): EVAL runs and re-caches them.
                for i in missing:
                    script, keys, args = commands[i]
                    pipe.eval(script.source, len(keys), *keys, *args)
                for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        return replies


# How long a batch of token counts alone waits for a limit check to share its round trip.
TOKEN_COUNT_DELAY_S = 0.01
# Key names kept encoded, by gateway key id (forgotten all at once past this many).
MAX_CACHED_KEY_NAMES = 10_000


class _Batch:
    """Script calls and per-key token counts gathered while the previous batch is on its way."""

    __slots__ = ("budgets", "calls", "releases", "sent", "started", "timer", "tokens", "tokens_done")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = False
        self.timer: asyncio.TimerHandle | None = None
        self.calls: list[tuple[_Script, Sequence[bytes], Sequence[bytes], asyncio.Future[Any]]] = []
        self.tokens: dict[str, int] = {}
        self.releases: dict[str, list[bytes]] = {}  # key -> reservations the counts settle
        self.budgets: dict[str, list[Any]] = {}  # organisation -> reservation id, cost, id, cost...
        self.tokens_done: asyncio.Future[None] = loop.create_future()
        self.sent: asyncio.Future[None] = loop.create_future()
        # A caller that timed out no longer awaits its future: never "exception was never retrieved".
        self.tokens_done.add_done_callback(retrieve_quietly)

    def commands(self, limiter: RedisLimiter) -> list[tuple[_Script, Sequence[bytes], Sequence[bytes]]]:
        """Counts and releases first, then the limit checks: a check sees every hold given back before it."""
        commands: list[tuple[_Script, Sequence[bytes], Sequence[bytes]]] = [
            (limiter._record_tokens_script, limiter._keys(key_id)[1:], (_b(tokens), *self.releases.get(key_id, ())))
            for key_id, tokens in self.tokens.items()
        ]
        commands += [
            (limiter._settle_budget_script, limiter._budget_keys(org_id), settles)
            for org_id, settles in self.budgets.items()
        ]
        commands += [(script, keys, args) for script, keys, args, _ in self.calls]
        return commands

    def answer(self, replies: list[Any]) -> None:
        counts = len(replies) - len(self.calls)
        for (_, _, _, future), reply in zip(self.calls, replies[counts:], strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(LimiterUnavailable(f"Redis error: {reply}"))
            else:
                future.set_result(reply)
        failed = [reply for reply in replies[:counts] if isinstance(reply, Exception)]
        if failed:
            self.tokens_done.set_exception(LimiterUnavailable(f"Redis error: {failed[0]}"))
        else:
            self.tokens_done.set_result(None)

    def fail(self, error: LimiterUnavailable) -> None:
        for *_, future in self.calls:
            if not future.done():
                future.set_exception(error)
        self.tokens_done.set_exception(error)
