"""Configuration: the YAML entries validate with errors an operator can act on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from runtime.guardrails import PII_CATEGORIES, STAGES, GuardrailConfig, Guardrails


def error(entry: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        GuardrailConfig.model_validate(entry)
    first = caught.value.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg'].removeprefix('Value error, ')}"


def test_the_documented_example_validates_with_its_defaults() -> None:
    pii = GuardrailConfig.model_validate({"key": "pii", "kind": "pii", "action": "redact"})
    assert pii.apply_to == list(STAGES)
    assert pii.categories is None  # all of them
    words = GuardrailConfig.model_validate(
        {
            "key": "words",
            "kind": "denylist",
            "terms": ["project falcon", "internal only"],
            "patterns": ["ACME-\\d{6}"],
            "action": "block",
        }
    )
    assert (words.action, words.apply_to) == ("block", ["input", "output", "tool_results"])
    assert len(pii.detectors()) == 8 and set(PII_CATEGORIES) == {
        d.category for d in pii.detectors()
    }


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"key": "p", "kind": "pii", "action": "redact", "colour": "red"},
            "colour: Extra inputs are not permitted",
        ),
        (
            {"key": "p", "kind": "pii", "action": "mask"},
            "action: Input should be 'block', 'redact' or 'log'",
        ),
        (
            {"key": "p", "kind": "regex", "action": "log"},
            "kind: Input should be 'pii' or 'denylist'",
        ),
        ({"key": "has space", "kind": "pii", "action": "log"}, "key: String should match pattern"),
        (
            {"key": "p", "kind": "pii", "action": "log", "apply_to": []},
            "apply_to: name at least one of input",
        ),
        (
            {"key": "p", "kind": "pii", "action": "log", "apply_to": ["prompt"]},
            "apply_to.0: Input should be 'input'",
        ),
        (
            {"key": "p", "kind": "pii", "action": "log", "categories": ["ssn"]},
            "categories.0: Input should be 'email'",
        ),
        (
            {"key": "p", "kind": "pii", "action": "log", "categories": []},
            "categories: name at least one category",
        ),
        (
            {"key": "p", "kind": "pii", "action": "log", "phone_regions": ["XX"]},
            "phone_regions: unknown phone region 'XX'",
        ),
        (
            {"key": "p", "kind": "pii", "action": "log", "terms": ["x"]},
            ": terms and patterns belong to kind 'denylist'",
        ),
        ({"key": "d", "kind": "denylist", "action": "log"}, ": a denylist needs terms or patterns"),
        (
            {"key": "d", "kind": "denylist", "action": "log", "terms": ["  "]},
            "terms: term 1 is empty",
        ),
        (
            {
                "key": "d",
                "kind": "denylist",
                "action": "log",
                "terms": ["a"],
                "categories": ["email"],
            },
            ": categories and phone_regions belong to kind 'pii'",
        ),
    ],
)
def test_invalid_entries_say_what_to_fix(entry: dict[str, Any], message: str) -> None:
    assert error(entry).startswith(message) or message in error(entry)


@pytest.mark.parametrize(
    "pattern, reason",
    [
        ("ACME-(", "is not a valid regular expression"),
        ("ACME-\\d+", "can match text of any length; bound its repeats"),
        ("x{1,300}", "can match up to 300 characters; at most 256"),
        ("a?", "can match empty text"),
        ("(a|a){1,30}b", "has too many ways to match at one place"),
        ("a?" * 20 + "b", "has too many ways to match at one place"),
        ("^ACME", "uses an anchor"),
        ("ACME$", "uses an anchor"),
        ("(?<=x)ACME", "uses a lookahead or lookbehind"),
        ("ACME(?!-)", "uses a lookahead or lookbehind"),
        ("(a)\\1", "uses a back-reference"),
        ("\\BACME", "uses \\B"),
        ("x" * 501, "is longer than 500 characters"),
    ],
)
def test_unsafe_or_unbounded_patterns_are_refused(pattern: str, reason: str) -> None:
    message = error(
        {"key": "d", "kind": "denylist", "action": "block", "patterns": ["ok", pattern]}
    )
    assert message.startswith(f"patterns: pattern 2 ('{pattern}') {reason}")


@pytest.mark.parametrize(
    "pattern",
    [
        "ACME-\\d{6}",
        "(?i)\\bproj-[a-z]{2,8}\\b",
        "\\d{3}(?:-\\d{3}){2}",
        "(?:\\d{1,3}\\.){3}\\d{1,3}",
    ],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    GuardrailConfig.model_validate(
        {"key": "d", "kind": "denylist", "action": "block", "patterns": [pattern]}
    )


def test_the_costliest_accepted_pattern_stays_fast_on_hostile_text() -> None:
    # Close to the path budget, run against text shaped to make it backtrack at every place.
    pattern = "\\w{1,32}@\\w{1,32}\\.\\w{2,10}"
    g = Guardrails.from_config(
        [GuardrailConfig(key="d", kind="denylist", action="redact", patterns=[pattern])], ["d"]
    )
    hostile = ("a" * 31 + "@" + "b" * 31 + " ") * 60
    started = time.perf_counter()
    g.check_text(hostile, "input")
    redactor = g.stream_redactor("output")
    for index in range(0, len(hostile), 20):
        redactor.feed(hostile[index : index + 20])
    redactor.finish()
    assert time.perf_counter() - started < 1.0  # a catastrophic pattern would take minutes


def test_from_config_takes_the_named_guardrails_in_order_and_refuses_unknown_ones() -> None:
    configs = [
        GuardrailConfig(key="a", kind="denylist", action="log", terms=["x"]),
        GuardrailConfig(key="b", kind="pii", action="redact"),
    ]
    assert Guardrails.from_config(configs, ["b", "a"]).keys == ["b", "a"]
    assert not Guardrails.from_config(configs, [])
    with pytest.raises(ValueError, match="unknown guardrail 'c'; configured: a, b"):
        Guardrails.from_config(configs, ["c"])


def test_detectors_are_compiled_once_and_shared() -> None:
    first = GuardrailConfig(key="a", kind="denylist", action="log", patterns=["ACME-\\d{6}"])
    second = GuardrailConfig(key="b", kind="denylist", action="block", patterns=["ACME-\\d{6}"])
    assert first.detectors() is second.detectors()
