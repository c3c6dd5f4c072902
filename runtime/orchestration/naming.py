"""Tool names as the model sees them: ``<plugin-id>__<tool>``, safe for every provider.

OpenAI function names must match ``^[a-zA-Z0-9_-]{1,64}$``; MCP tools may use
``.`` and 128 characters. Names are sanitised, and an overlong name is cut and
suffixed with a short hash of the full name so distinct tools stay distinct.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 64
SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def public_name(plugin_id: str, tool_name: str) -> str:
    """The function name offered to the model for ``tool_name`` of ``plugin_id``."""
    full = f"{plugin_id}{SEPARATOR}{tool_name}"
    cleaned = _UNSAFE.sub("_", full)
    if len(cleaned) <= MAX_NAME and cleaned == full:
        return full
    # Sanitising can make two tools collide (``a.b`` and ``a_b``): hash the original.
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    if len(cleaned) <= MAX_NAME - 9:
        return f"{cleaned}_{digest}"
    return f"{cleaned[: MAX_NAME - 9]}_{digest}"
