"""Operator-written denylist patterns: checked once, at configuration time.

A pattern is refused, with a reason the operator can act on, unless:

- Python's ``re`` understands it and it cannot match empty text;
- its matches are bounded: at most ``MAX_PATTERN_MATCH_CHARS`` characters (write
  ``\\d{1,12}`` rather than ``\\d+``). The stream redactor holds back a tail that
  could still become a match, so a match needs a known longest length;
- it backtracks through at most ``MAX_PATTERN_PATHS`` ways of matching at one
  place (the product of each repeat's choices, the sum of alternatives). This
  is the guard against catastrophic backtracking chosen over a match timeout:
  ``(a|a){1,30}`` or twenty ``a?`` in a row are refused when the configuration
  loads, instead of stalling a request later;
- it uses no lookaround, back-reference or anchor other than ``\\b``: whether a
  pattern matches at a place must depend only on the match and one character
  either side, so that a streamed answer is judged exactly as a whole one.

Patterns are then compiled with the ``regex`` module, whose partial matching
tells the stream redactor whether a tail could still grow into a match.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

import regex

# The standard library's own regular-expression parser (private, no type stubs): used to
# analyse a pattern's structure, never to match. tests/guardrails pin what it must report.
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

MAX_PATTERN_CHARS = 500
MAX_PATTERN_MATCH_CHARS = 256
MAX_PATTERN_PATHS = 10_000

_CATEGORY_CLASSES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}


class PatternRefused(ValueError):
    """Why a denylist pattern cannot be used, phrased for the operator."""


@dataclass(frozen=True)
class CompiledPattern:
    pattern: regex.Pattern[str]
    max_chars: int
    # A character no match can contain, when the pattern's alphabet is known (None: any).
    terminator: regex.Pattern[str] | None


def compile_pattern(source: str) -> CompiledPattern:
    if not source:
        raise PatternRefused("is empty")
    if len(source) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"is longer than {MAX_PATTERN_CHARS} characters")
    try:
        parsed = sre_parse.parse(source)
    except re.error as exc:
        raise PatternRefused(f"is not a valid regular expression ({exc})") from None
    smallest, largest = parsed.getwidth()
    if largest >= sre.MAXREPEAT:
        raise PatternRefused(
            "can match text of any length; bound its repeats (for example \\d{1,12} instead of \\d+)"
        )
    if largest > MAX_PATTERN_MATCH_CHARS:
        raise PatternRefused(
            f"can match up to {largest} characters; at most {MAX_PATTERN_MATCH_CHARS} are allowed"
        )
    if smallest == 0:
        raise PatternRefused("can match empty text")
    paths = _paths(list(parsed))
    if paths > MAX_PATTERN_PATHS:
        raise PatternRefused(
            "has too many ways to match at one place (nested or stacked optional repeats); "
            "simplify it so matching stays fast"
        )
    flags = parsed.state.flags
    regex_flags = regex.V0 | (regex.IGNORECASE if flags & sre.SRE_FLAG_IGNORECASE else 0)
    regex_flags |= regex.ASCII if flags & sre.SRE_FLAG_ASCII else 0
    regex_flags |= regex.DOTALL if flags & sre.SRE_FLAG_DOTALL else 0
    try:
        compiled = regex.compile(source, regex_flags)
    except regex.error as exc:  # the two engines disagree on some rare syntax
        raise PatternRefused(f"is not a valid regular expression ({exc})") from None
    alphabet = _alphabet(list(parsed))
    terminator = None
    if alphabet is not None:
        terminator = regex.compile(f"[^{''.join(sorted(alphabet))}]", regex_flags)
    return CompiledPattern(compiled, largest, terminator)


def _paths(items: list[tuple[Any, Any]]) -> int:
    """An upper bound of the ways a backtracking engine can try to match at one place."""
    total = 1
    for op, value in items:
        total = min(total * _paths_of(op, value), MAX_PATTERN_PATHS + 1)
    return total


def _paths_of(op: Any, value: Any) -> int:
    if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
        return 1
    if op is sre.AT:
        if value is sre.AT_BOUNDARY:
            return 1
        if value is sre.AT_NON_BOUNDARY:
            raise PatternRefused("uses \\B; only \\b is allowed")
        raise PatternRefused(
            "uses an anchor (^, $, \\A, \\Z); denylist patterns match anywhere in the text"
        )
    if op is sre.BRANCH:
        return min(sum(_paths(list(branch)) for branch in value[1]), MAX_PATTERN_PATHS + 1)
    if op is sre.SUBPATTERN:
        return _paths(list(value[3]))
    if op is sre.ATOMIC_GROUP:
        return _paths(list(value))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, item = value
        inner = _paths(list(item))
        if inner == 1:
            return high - low + 1
        total = 0
        for count in range(low, high + 1):
            total += inner**count
            if total > MAX_PATTERN_PATHS:
                return MAX_PATTERN_PATHS + 1
        return total
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        raise PatternRefused("uses a lookahead or lookbehind; only \\b is allowed")
    if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
        raise PatternRefused("uses a back-reference")
    raise PatternRefused(f"uses a construct denylist patterns do not support ({op})")


def _alphabet(items: list[tuple[Any, Any]]) -> set[str] | None:
    """Escaped character-class members covering every character a match may contain, or None."""
    found: set[str] = set()
    for op, value in items:
        if op is sre.LITERAL:
            found.add(regex.escape(chr(value)))
        elif op is sre.IN:
            for inner_op, inner in value:
                if inner_op is sre.LITERAL:
                    found.add(regex.escape(chr(inner)))
                elif inner_op is sre.RANGE:
                    found.add(f"{regex.escape(chr(inner[0]))}-{regex.escape(chr(inner[1]))}")
                elif inner_op is sre.CATEGORY and inner in _CATEGORY_CLASSES:
                    found.add(_CATEGORY_CLASSES[inner])
                else:  # a negated class: almost any character
                    return None
        elif op is sre.AT:
            continue
        elif op is sre.BRANCH:
            for branch in value[1]:
                more = _alphabet(list(branch))
                if more is None:
                    return None
                found |= more
        elif op is sre.SUBPATTERN:
            more = _alphabet(list(value[3]))
            if more is None:
                return None
            found |= more
        elif op is sre.ATOMIC_GROUP:
            more = _alphabet(list(value))
            if more is None:
                return None
            found |= more
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            more = _alphabet(list(value[2]))
            if more is None:
                return None
            found |= more
        else:  # ANY, NOT_LITERAL: any character
            return None
    return found
