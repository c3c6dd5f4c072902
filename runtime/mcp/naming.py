"""Tool names that OpenAI accepts.

MCP allows ``.`` and 128 characters in a tool name; OpenAI function names must
match ``^[a-zA-Z0-9_-]{1,64}$``. Names are sanitised, and a name that is still
too long is cut and suffixed with a hash of the original, so two long names
sharing a prefix stay distinct and the mapping is stable across restarts.
"""

from __future__ import annotations

import hashlib
import re

_DISALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_HASH_CHARS = 8


def sanitize_tool_name(name: str, max_len: int = 64) -> str:
    """Reduce ``name`` to ``[A-Za-z0-9_-]`` and at most ``max_len`` characters.

    Disallowed characters become ``_``. On overflow the name is truncated and
    ``_<8 hex chars of sha256(original name)>`` appended. Deterministic.
    """
    if max_len < _HASH_CHARS + 2:
        raise ValueError(f"max_len must be at least {_HASH_CHARS + 2}")
    cleaned = _DISALLOWED.sub("_", name) or "tool"
    if len(cleaned) <= max_len:
        return cleaned
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[: max_len - _HASH_CHARS - 1]}_{digest}"
