"""Small text helpers shared by every part of the gateway: one truncation, one credential mask."""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def truncate(content: str, limit: int) -> str:
    """Cut ``content`` to ``limit`` characters, the notice included, saying how much was left out."""
    if len(content) <= limit:
        return content
    notice = f"\n[plugway: result truncated from {len(content)} to {limit} characters]"
    return content[: max(0, limit - len(notice))] + notice


def quoted(value: str, limit: int = 64) -> str:
    """A client's value as an error message repeats it: at most ``limit`` characters, quoted."""
    return f"'{value}'" if len(value) <= limit else f"'{value[:limit]}…' ({len(value)} characters)"


def mask_credentials(text: str) -> str:
    """Hide the password of every URL in ``text`` (``postgresql://app:****@db/plugway``)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:****@", text)
