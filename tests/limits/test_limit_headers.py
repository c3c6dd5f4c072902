from __future__ import annotations

import pytest

from runtime.limits import LimitDecision, format_reset


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.02, "20ms"),
        (0.0004, "1ms"),  # rounded up: never announce a reset before it happens
        (0.999, "999ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.5, "59.5s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.25, "1m30.25s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (86_399.001, "23h59m59.001s"),
    ],
)
def test_reset_values_read_like_openai(seconds: float, expected: str) -> None:
    assert format_reset(seconds) == expected


def _decision(**overrides: object) -> LimitDecision:
    fields: dict[str, object] = dict(
        allowed=True,
        reason=None,
        retry_after_s=None,
        limit_requests=20,
        remaining_requests=7,
        reset_requests_s=42.0,
        limit_tokens=10_000,
        remaining_tokens=2_500,
        reset_tokens_s=360.0,
    )
    fields.update(overrides)
    return LimitDecision(**fields)  # type: ignore[arg-type]


def test_allowed_response_carries_both_limit_families_and_no_retry_after() -> None:
    assert _decision().headers() == {
        "x-ratelimit-limit-requests": "20",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "42s",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "2500",
        "x-ratelimit-reset-tokens": "6m0s",
    }


def test_unset_limits_send_no_headers_for_them() -> None:
    only_rpm = _decision(limit_tokens=None, remaining_tokens=None, reset_tokens_s=None)
    assert set(only_rpm.headers()) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }
    only_tokens = _decision(limit_requests=None, remaining_requests=None, reset_requests_s=None)
    assert set(only_tokens.headers()) == {
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }


def test_refusal_adds_retry_after_in_whole_seconds_rounded_up() -> None:
    refused = _decision(allowed=False, reason="rpm", retry_after_s=2.01, remaining_requests=0)
    headers = refused.headers()
    assert headers["Retry-After"] == "3"
    assert headers["retry-after-ms"] == "2010"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute" in refused.message() and "20" in refused.message()


def test_sub_second_refusal_never_says_retry_after_zero() -> None:
    refused = _decision(allowed=False, reason="rpm", retry_after_s=0.003)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["retry-after-ms"] == "3"
