"""An upstream's reported usage made safe to bill, count and show (``checked_usage``).

In the foundation, beside the reservations it estimates with, because the run's state
(``runtime.request.RunState``) checks every upstream call's usage as it adds it.
"""

from __future__ import annotations

import logging
from typing import Any

from runtime.limits.reservation import estimated_tokens, plan, text_chars

log = logging.getLogger("plugway.billing")


# No real call comes near it, and every JSON client reads it exactly; sums of a few stay in 64 bits.
MAX_USAGE_TOKENS = 2**53 - 1
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _count(value: Any) -> int | None:
    """A token count as an upstream may send it, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON parsers read integers beyond 64 bits as floats
    if isinstance(value, int) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return None


def checked_usage(
    usage: dict[str, Any], *, prompt: Any = None, output_chars: int = 0, output: Any = None, request_id: str = ""
) -> dict[str, Any]:
    """An upstream's usage (OpenAI chat shape) made safe to bill, count and show.

    Prompt and completion counts must be whole numbers from 0 to ``MAX_USAGE_TOKENS``; one
    that is not (missing, negative, beyond 64 bits, not a number) is replaced by plugway's own
    estimate, from the request (``prompt``) and the answer's text (``output``'s characters when
    given, else ``output_chars``), at about 4 characters a token (``estimated_tokens``): both are
    read only then. ``total_tokens`` is always their sum (an upstream's
    inconsistent total is replaced). Detail counts that are not valid are dropped. Every
    replacement is logged; nothing here raises.
    """
    replaced: list[str] = []
    prompt_tokens = _count(usage.get("prompt_tokens"))
    if prompt_tokens is None:
        replaced.append(f"prompt_tokens={str(usage.get('prompt_tokens'))[:40]}")
        prompt_tokens = plan(prompt, default_output_tokens=1).prompt_tokens if prompt is not None else 0
    completion_tokens = _count(usage.get("completion_tokens"))
    if completion_tokens is None:
        replaced.append(f"completion_tokens={str(usage.get('completion_tokens'))[:40]}")
        completion_tokens = estimated_tokens(output_chars if output is None else text_chars(output))
    checked: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    total = prompt_tokens + completion_tokens
    reported_total = usage.get("total_tokens")
    if reported_total is not None and _count(reported_total) != total and not replaced:
        replaced.append(f"total_tokens={str(reported_total)[:40]} (prompt + completion = {total})")
    checked["total_tokens"] = total
    for name, value in usage.items():
        if name in USAGE_COUNTS:
            continue
        if isinstance(value, dict):
            details = {k: v for k, v in value.items() if _count(v) is not None or not isinstance(v, (int, float))}
            if len(details) != len(value):
                replaced.append(f"{name} (invalid counts dropped)")
            checked[name] = details
        else:
            checked[name] = value
    if replaced:
        log.warning(
            "request %s: the upstream reported usage that cannot be billed (%s); plugway's own count is used instead",
            request_id or "?", ", ".join(replaced),
        )
    return checked
