"""The text detectors read: what a model reads, whatever the obfuscation.

A model reads ``j\u200bohn@ex\u00adample.com`` (a zero-width space, a soft hyphen),
``４１１１…`` (full-width digits) or ``s\u0435cret`` (a Cyrillic ``е``) as the plain
text, so detectors must too. :func:`normalise` builds that view:

- format characters (Unicode category ``Cf``: zero-width space, joiners, soft hyphen,
  word joiner, bidi controls, byte-order mark) and other default-ignorable characters
  (variation selectors, the combining grapheme joiner, Hangul fillers) are removed;
- each character with the combining marks after it is put in NFKC (full-width and
  other compatibility forms become their plain letters, digits and ``@``);
- a letter that is not ASCII is replaced by the Latin letter it is confusable with,
  from Unicode's TR39 confusables table (through ``disarm``): a Cyrillic ``е`` is an
  ``e``, a Greek ``ο`` an ``o``. Letters keep their case; digits stay digits.

ASCII text is its own view (nothing to do). Every character of the view remembers
the span of original text it came from, so a match found in the view redacts exactly
the original characters, invisible ones inside it included.
"""

from __future__ import annotations

import bisect
import functools
import unicodedata
from dataclasses import dataclass

import disarm
import regex

# Default-ignorable characters outside category Cf (which is removed whole).
_IGNORABLE = frozenset(
    [chr(code) for code in range(0xFE00, 0xFE10)]  # variation selectors
    + [chr(code) for code in range(0xE0100, 0xE01F0)]  # variation selectors supplement
    + ["\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u3164", "\uffa0"]
)


def _ignorable(char: str) -> bool:
    return char in _IGNORABLE or unicodedata.category(char) == "Cf"


@functools.lru_cache(maxsize=8192)
def fold(cluster: str) -> str:
    """One character and its combining marks as detectors read them ('' when invisible)."""
    visible = "".join(char for char in cluster if not _ignorable(char))
    folded = unicodedata.normalize("NFKC", visible)
    if folded.isascii():
        return folded
    return "".join(char if char.isascii() else disarm.normalize_confusables(char) for char in folded)


@dataclass(frozen=True, slots=True)
class Normalised:
    """``text`` as detectors read it; ``starts[i]``/``ends[i]``: the original span of its character i."""

    text: str
    original: str
    starts: tuple[int, ...] | None = None  # None: position i of the view is position i of the original
    ends: tuple[int, ...] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters behind ``text[start:end]`` (a non-empty range)."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]

    def original_offset(self, index: int) -> int:
        """Where in the original text the view's position ``index`` falls (a cut between characters)."""
        if self.starts is None:
            return index
        return self.starts[index] if index < len(self.text) else len(self.original)

    def view_offset(self, index: int) -> int:
        """The first position of the view at or after the original position ``index``."""
        if self.starts is None:
            return index
        return bisect.bisect_left(self.starts, index)


_MARK = regex.compile(r"\p{M}")


def normalise(text: str) -> Normalised:
    if text.isascii():
        return Normalised(text, text)
    distinct = [char for char in set(text) if not char.isascii()]
    # Only the characters the view writes differently (most accented letters stay as they are).
    changed = {char: folded for char in distinct if (folded := fold(char)) != char}
    table = {ord(char): folded for char, folded in changed.items()}
    resized = "".join(regex.escape(char) for char, folded in changed.items() if len(folded) != 1)
    # No ASCII character is a mark: looking among the distinct others is looking through the text.
    if not resized and _MARK.search("".join(distinct)) is None:
        # Each character becomes one (most text: letters, punctuation): positions do not move.
        return Normalised(_replaced(text, changed), text)
    # Otherwise only what changes length is handled one by one: a character that folds to
    # none or several, and any character with combining marks after it (folded together).
    clusters = regex.compile(r"(?s:.)\p{M}+" + (f"|[{resized}]" if resized else ""))
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    for cluster in clusters.finditer(text):
        start, stop = cluster.span()
        if position < start:
            pieces.append(text[position:start].translate(table))
            starts += range(position, start)
            ends += range(position + 1, start + 1)
        folded = fold(cluster.group())
        pieces.append(folded)
        starts += [start] * len(folded)
        ends += [stop] * len(folded)
        position = stop
    if position < len(text):
        pieces.append(text[position:].translate(table))
        starts += range(position, len(text))
        ends += range(position + 1, len(text) + 1)
    return Normalised("".join(pieces), text, tuple(starts), tuple(ends))


def _replaced(text: str, changed: dict[str, str]) -> str:
    """``text`` with each character of ``changed`` replaced, as ``str.translate`` would: by one
    ``str.replace`` per character when no replacement holds a character replaced (the usual case),
    which is many times faster than ``translate`` on text that is not ASCII."""
    if not changed:
        return text
    if any(char in changed for folded in changed.values() for char in folded):
        return text.translate({ord(char): folded for char, folded in changed.items()})
    for char, folded in changed.items():
        text = text.replace(char, folded)
    return text


def normalise_term(term: str) -> str:
    """A denylisted term as the view writes it, so that it matches its own obfuscations."""
    return normalise(term).text
