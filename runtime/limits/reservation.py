"""How much of a key's daily tokens and an organisation's budget a request holds while it runs.

Limits and budgets are checked when a request is admitted, but its usage is only
known when it ends. To keep a burst of concurrent requests from all passing the
same check, each admitted request *reserves* the most it may use, in the same
step as the check (the limiter's one script call, the budget guard's one
synchronous step), and settles with its real figure when it ends, fails or is
cancelled. A request is admitted while settled usage plus every reservation
held stays under the cap, so:

    counted at the end of a burst  <  cap + the usage of the request admitted last

as long as each request stays within its reservation. The reservation is:

- the prompt: every character of the request body (messages, instructions,
  tools, previous turns) at about 4 characters a token, rounded up: an
  over-estimate for text, which is the safe side;
- plus the output: the request's ``max_completion_tokens`` / ``max_tokens`` /
  ``max_output_tokens``, or ``limits.default_reserved_output_tokens`` when it
  names none;
- for an orchestrated request (server-side tools), times ``max_tool_rounds + 1``,
  the most upstream calls it can make. Tool results that enlarge later rounds'
  prompts are not foreseen; a request that exceeds its reservation is still
  counted in full when it settles.

A reservation larger than the key's cap (or the budget) is cut to it: it
blocks every other request of the key until it settles either way.

Where holds live: with Redis, the key's tokens and the organisation's budget are
held in the limiter's one script call, shared by every gateway process; in the
embedded default (no Redis), tokens in the in-process limiter and the budget in
the process's budget guard. A request refused after admission (an endpoint's
input check, a guardrail block before any upstream call) gives its holds back at
once (``Ledger.release``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runtime.config import Price

# About four characters a token: plugway's own count wherever an upstream's is missing.
CHARS_PER_TOKEN = 4


def estimated_tokens(chars: int) -> int:
    """plugway's own token count for ``chars`` characters, wherever no upstream counted them:
    reservations, usage an upstream reported badly or never sent, an endpoint's context. The
    one rounding (up, so text is never counted as free)."""
    return math.ceil(max(0, chars) / CHARS_PER_TOKEN)

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# Enough to hold any real request; small enough that Redis never overflows adding a few.
MAX_RESERVATION_TOKENS = 2**52


@dataclass(frozen=True, slots=True)
class Planned:
    """The most one request may use: tokens for the key's cap, dollars for the budget."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return min(self.prompt_tokens + self.completion_tokens, MAX_RESERVATION_TOKENS)

    def cost_usd(self, prices: Iterable[Price | None]) -> float:
        """The cost at the dearest of the prices (the model and the fallbacks it may be served by)."""
        costs = [
            (self.prompt_tokens * price.input_per_mtok + self.completion_tokens * price.output_per_mtok) / 1_000_000
            for price in prices
            if price is not None
        ]
        return max(costs, default=0.0)


def text_chars(value: Any) -> int:
    """Characters of every string (and key) in a JSON value; iterative, so any depth is safe."""
    total = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        # Exact types first: a parsed JSON body is nothing else, and this runs on every request.
        if kind is str:
            total += len(item)
        elif kind is dict:
            for key in item:
                total += len(key) if type(key) is str else len(str(key))
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += sum(len(str(k)) for k in item)
            extend(item.values())
        elif isinstance(item, (list, tuple)):
            extend(item)
    return total


def requested_output_tokens(body: Any) -> int | None:
    """The output cap a request body names, in any front door's spelling; None when it names none."""
    if not isinstance(body, dict):
        return None
    for name in OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def plan(body: Any, *, default_output_tokens: int, rounds: int = 1, prompt_parts: Iterable[Any] = ()) -> Planned:
    """The reservation for a request body (plus context it carries elsewhere, e.g. previous turns)."""
    chars = text_chars(body) + sum(text_chars(part) for part in prompt_parts)
    prompt = estimated_tokens(chars)
    output = requested_output_tokens(body) or default_output_tokens
    rounds = max(1, rounds)
    return Planned(
        prompt_tokens=min(prompt * rounds, MAX_RESERVATION_TOKENS),
        completion_tokens=min(output * rounds, MAX_RESERVATION_TOKENS),
    )


@dataclass
class Reservation:
    """What admission held for one request: a share of its organisation's budget and of its
    key's daily tokens (the limiter's ``reservation_id``), released once when it settles."""

    organisation_id: str
    budget_hold: int | None = None  # the budget guard's hold id (budgets held in this process)
    limit_id: str | None = None  # the limiter's reservation id
    budget_in_limiter: bool = False  # the budget is held by the limiter (Redis), under ``limit_id``
    settled: bool = False
