"""Opaque cursors for paginated lists: ``{"data": [...], "next_cursor": "..." | null}``."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from runtime.errors import invalid_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode(position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid_request("This cursor is not one the API gave out.", param="cursor") from None


def page(rows: list[Any], limit: int, position: Any) -> dict[str, Any]:
    """``rows`` fetched with ``limit + 1``: the page, and a cursor when there is more."""
    more = len(rows) > limit
    data = rows[:limit]
    return {"data": data, "next_cursor": encode(position(data[-1])) if more and data else None}
