"""What a request reserves of its key's daily tokens and its organisation's budget."""

from __future__ import annotations

import math

import pytest

from runtime.billing import checked_usage, plan_reservation
from runtime.config import Price, settings_from_dict
from runtime.limits.reservation import MAX_RESERVATION_TOKENS, plan
from runtime.request import RunState

SETTINGS = settings_from_dict(
    {"database_url": "sqlite:///unused.db", "orchestration": {"max_tool_rounds": 3}, "limits": {"default_reserved_output_tokens": 500}}
)


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens", "max_output_tokens"])
def test_the_output_reserved_is_the_requests_own_cap_in_any_front_doors_spelling(field: str) -> None:
    planned = plan({field: 64, "messages": [{"role": "user", "content": "x" * 400}]}, default_output_tokens=500)
    assert planned.completion_tokens == 64
    # Every character of the body counts towards the prompt, rounded up: 400 of content and the names around it.
    assert 100 < planned.prompt_tokens < 120


def test_a_request_naming_no_output_cap_reserves_the_configured_default() -> None:
    planned = plan_reservation(SETTINGS, {"messages": [{"role": "user", "content": "hi"}]}, orchestrated=False)
    assert planned.completion_tokens == 500


def test_an_orchestrated_request_reserves_every_round_it_may_make() -> None:
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": "x" * 400}]}
    one = plan_reservation(SETTINGS, body, orchestrated=False)
    rounds = plan_reservation(SETTINGS, body, orchestrated=True)
    assert (rounds.prompt_tokens, rounds.completion_tokens) == (4 * one.prompt_tokens, 4 * one.completion_tokens)


def test_earlier_turns_the_body_does_not_carry_count_towards_the_prompt() -> None:
    alone = plan({"input": "hi"}, default_output_tokens=1)
    with_history = plan({"input": "hi"}, default_output_tokens=1, prompt_parts=([{"role": "user", "content": "y" * 4000}],))
    assert with_history.prompt_tokens >= alone.prompt_tokens + 1000


def test_embeddings_reserve_no_output_and_huge_requests_stay_in_range() -> None:
    assert plan_reservation(SETTINGS, {"input": "x" * 40}, orchestrated=False, produces_output=False).completion_tokens == 0
    huge = plan({"max_tokens": 2**62}, default_output_tokens=1, rounds=64)
    assert huge.tokens == MAX_RESERVATION_TOKENS


def test_the_cost_held_is_at_the_dearest_price_a_request_may_be_served_at() -> None:
    planned = plan({"max_tokens": 1_000_000}, default_output_tokens=1)
    cheap, dear = Price(input_per_mtok=0.1, output_per_mtok=1.0), Price(input_per_mtok=1.0, output_per_mtok=4.0)
    assert math.isclose(planned.cost_usd([cheap, None, dear]), planned.prompt_tokens * 1e-6 + 4.0)
    assert planned.cost_usd([None]) == 0.0


@pytest.mark.parametrize(
    "reported",
    [
        {"prompt_tokens": -1, "completion_tokens": 5, "total_tokens": 4},
        {"prompt_tokens": 2**64, "completion_tokens": 5, "total_tokens": 2**64 + 5},
        {"prompt_tokens": 1.8446744073709552e19, "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
        {"completion_tokens": 5},
    ],
)
def test_an_invalid_prompt_count_is_replaced_by_the_estimate(reported: dict[str, object]) -> None:
    checked = checked_usage(reported, prompt={"messages": [{"role": "user", "content": "x" * 40}]}, output_chars=20)
    assert checked["completion_tokens"] == 5
    assert 10 <= checked["prompt_tokens"] < 20
    assert checked["total_tokens"] == checked["prompt_tokens"] + 5


def test_valid_usage_passes_unchanged_with_its_details() -> None:
    reported = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 2}}
    assert checked_usage(reported) == reported
    bad_details = checked_usage({**reported, "completion_tokens_details": {"reasoning_tokens": -3}})
    assert bad_details["completion_tokens_details"] == {}


@pytest.mark.parametrize("chars", [1, 5, 399, 401])
def test_a_stream_cut_before_its_usage_and_bad_usage_are_billed_at_one_estimate(chars: int) -> None:
    # The same text counted by the two paths that bill plugway's own figure: an upstream's
    # invalid completion count, and a stream whose usage chunk never arrived.
    replaced = checked_usage({"prompt_tokens": 0, "completion_tokens": -1}, output_chars=chars)
    cut = RunState(request_id="r", model="m")
    cut.unbilled_chars = chars
    cut.count_unbilled()
    assert cut.usage["completion_tokens"] == replaced["completion_tokens"] == math.ceil(chars / 4)
    assert cut.usage["total_tokens"] == cut.usage["completion_tokens"] and cut.unbilled_chars == 0
