"""Small text helpers shared by every part of the gateway: one truncation, one credential mask."""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


# The one notice a model reads when a tool result (plugin or MCP) was cut.
TRUNCATION_NOTICE = "\n[plugway: result truncated, showing {shown} of {total} characters]"


def truncate(content: str, limit: int) -> str:
    """Cut ``content`` to ``limit`` characters, the notice included, saying how much was left out."""
    if len(content) <= limit:
        return content
    total = len(content)
    # The notice with ``shown`` at its widest, so the cut text plus notice never passes ``limit``.
    shown = max(0, limit - len(TRUNCATION_NOTICE.format(shown=limit, total=total)))
    return content[:shown] + TRUNCATION_NOTICE.format(shown=shown, total=total)


def quoted(value: str, limit: int = 64) -> str:
    """A client's value as an error message repeats it: at most ``limit`` characters, quoted."""
    return f"'{value}'" if len(value) <= limit else f"'{value[:limit]}…' ({len(value)} characters)"


def mask_credentials(text: str) -> str:
    """Hide the password of every URL in ``text`` (``postgresql://app:****@db/plugway``)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:****@", text)
