"""Redacting text that arrives in chunks, without ever sending part of a match.

Each detector of each guardrail is one stage; a stage's output is the next
one's input, exactly as the whole-text check applies them one after another.
A stage keeps the text it has not sent yet and, after each chunk, sends the
longest prefix that is *settled*:

- a place is decided when the detector's answer there can no longer change:
  it lies more than a longest match (plus the lookahead) before the end of what
  arrived, or a terminator (a character no match can contain) follows it;
- an undecided place where no match could start whatever comes next (the
  candidate pattern's partial match fails) is decided too: it holds nothing back;
- the stage stops at the first undecided place where a match could still start,
  and at the start of any match not yet decided. Everything before is sent,
  redacted; the rest waits for the next chunk or ``finish()``.

So the tail held back is at most one longest match, and only while it could
still become one: a trailing word ("proj…" for a denylisted "project falcon",
"bob" before a possible "@"), a digit run that may grow into a card number.
Because every detector's answer at a place reads only a bounded window around
it (see ``detectors.py``), the text sent equals, chunk split or not, the
whole-text redaction; the tests check this for every split point.
"""

from __future__ import annotations

import functools

import regex

from runtime.guardrails.detectors import CONTEXT_CHARS, Detector, Hit, in_original, scan
from runtime.guardrails.findings import Finding, GuardrailBlocked
from runtime.guardrails.normalise import normalise


def render(text: str, start: int, stop: int, hits: list[Hit], placeholder: str | None) -> str:
    """``text[start:stop]`` with each hit replaced by the placeholder (unchanged when None)."""
    if placeholder is None or not hits:
        return text[start:stop]
    pieces: list[str] = []
    position = start
    for hit in hits:
        pieces.append(text[position : hit.start])
        pieces.append(placeholder)
        position = hit.end
    pieces.append(text[position:stop])
    return "".join(pieces)


@functools.lru_cache(maxsize=1024)
def _reversed(pattern: regex.Pattern[str]) -> regex.Pattern[str]:
    return regex.compile(pattern.pattern, pattern.flags | regex.REVERSE)


def settle(
    detector: Detector, text: str, start: int, end: int, hits: list[Hit]
) -> tuple[int, list[Hit]]:
    """How much of ``text[start:end]`` can be sent now, and the matches in that part."""
    reach = detector.lookahead_chars
    undecided_from = max(start, end - detector.max_chars - reach + 1)
    if detector.terminator is not None and undecided_from < end:
        last = _reversed(detector.terminator).search(text, undecided_from, end - reach + 1)
        if last is not None:
            undecided_from = max(undecided_from, last.start() + 1)

    def first_open(begin: int, stop: int) -> int | None:
        begin = max(begin, undecided_from)
        if begin >= stop:
            return None
        possible = detector.first_possible_start(text, begin, end)
        return possible if possible is not None and possible < stop else None

    settled: list[Hit] = []
    position = start
    for hit in hits:
        open_at = first_open(position, hit.start)
        if open_at is not None:
            return open_at, settled
        final = hit.start < undecided_from or (
            detector.final_once_complete and hit.end + reach <= end
        )
        if not final:
            return hit.start, settled
        settled.append(hit)
        position = hit.end
    open_at = first_open(position, end)
    return (end if open_at is None else open_at), settled


class DetectorStream:
    """One detector over a stream: text in, settled (and, if asked, redacted) text out."""

    def __init__(self, detector: Detector, *, replace: bool) -> None:
        self.detector = detector
        self._placeholder = detector.placeholder if replace else None
        self._context = ""  # text already sent, for lookbehinds
        self._pending = ""  # text not sent yet

    @property
    def held(self) -> int:
        return len(self._pending)

    def push(self, chunk: str, *, final: bool) -> tuple[str, list[Hit]]:
        if not chunk and not final:
            return "", []
        self._pending += chunk
        text = self._context + self._pending
        # Detectors read the normalised view; what is sent and redacted is the original text.
        view = normalise(text)
        start, end = view.view_offset(len(self._context)), len(view.text)
        hits = scan(self.detector, view.text, start, end)
        if final:
            cut, settled = end, hits
        else:
            cut, settled = settle(self.detector, view.text, start, end, hits)
        settled = in_original(view, settled)
        cut = view.original_offset(cut)
        out = render(text, len(self._context), cut, settled, self._placeholder)
        self._context = text[max(0, cut - CONTEXT_CHARS) : cut]
        self._pending = text[cut:]
        return out, settled


class GuardrailStream:
    """One guardrail's detectors, chained; its action decides what leaves."""

    def __init__(self, key: str, action: str, detectors: tuple[Detector, ...]) -> None:
        self.key = key
        self.action = action
        # Later detectors see earlier ones' placeholders (as in the whole-text check), whatever the action.
        self._stages = [DetectorStream(detector, replace=True) for detector in detectors]

    @property
    def held(self) -> int:
        return sum(stage.held for stage in self._stages)

    def push(self, chunk: str, *, final: bool) -> tuple[str, list[Finding]]:
        text = chunk
        findings: list[Finding] = []
        for stage in self._stages:
            text, hits = stage.push(text, final=final)
            findings += [
                Finding(self.key, stage.detector.category, self.action, hit.message) for hit in hits
            ]
            if findings and self.action == "block":
                raise GuardrailBlocked(self.key, findings)
        # "log" changes nothing and hides nothing: its text leaves at once, findings follow.
        return (chunk if self.action == "log" else text), findings


class StreamRedactor:
    """Guardrails over streamed text: ``feed`` each chunk, send what it returns, then ``finish``."""

    def __init__(self, guardrails: list[GuardrailStream]) -> None:
        self._guardrails = guardrails
        self.findings: list[Finding] = []
        self._closed = False

    @property
    def held(self) -> int:
        """Characters received but not sent yet (a diagnostic)."""
        return sum(guardrail.held for guardrail in self._guardrails)

    def feed(self, text: str) -> str:
        """The part of what arrived so far that is safe to send now; raises GuardrailBlocked."""
        return self._push(text, final=False)

    def finish(self) -> str:
        """Everything still held back, checked; raises GuardrailBlocked."""
        return self._push("", final=True)

    def _push(self, text: str, *, final: bool) -> str:
        if self._closed:
            raise RuntimeError("this stream redactor has finished or blocked; start a new one")
        try:
            for guardrail in self._guardrails:
                text, findings = guardrail.push(text, final=final)
                self.findings += findings
        except GuardrailBlocked as blocked:
            self._closed = True
            self.findings += blocked.findings
            raise
        self._closed = final
        return text
