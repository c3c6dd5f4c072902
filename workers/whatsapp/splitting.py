"""Cut a long reply into WhatsApp-sized parts at the most natural boundary available."""

from __future__ import annotations

import re

WHATSAPP_TEXT_LIMIT = 4096

# Strongest boundary first: paragraph, line, sentence, word.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?…。！？])[\"')\]]*\s+"),
    re.compile(r"\s+"),
)


def split_text(text: str, limit: int = WHATSAPP_TEXT_LIMIT) -> list[str]:
    """Parts of at most ``limit`` characters, each cut at the strongest boundary that fits."""
    if limit < 1:
        raise ValueError("limit must be positive")
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = _cut_point(text, limit)
        head, text = text[:cut].rstrip(), text[cut:].lstrip()
        if head:
            parts.append(head)
    if text:
        parts.append(text)
    return parts


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]  # a boundary right after the limit still lets the head fit
    for boundary in _BOUNDARIES:
        ends = [m.start() for m in boundary.finditer(window) if 0 < m.start() <= limit]
        # Ignore boundaries that would leave a tiny head: better to cut a weaker one later on.
        good = [e for e in ends if e >= limit // 4]
        if good:
            return good[-1]
    return limit
