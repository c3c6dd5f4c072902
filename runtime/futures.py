"""Small helpers for asyncio futures shared by batching writers."""

from __future__ import annotations

import asyncio
from typing import Any


def retrieve_quietly(future: asyncio.Future[Any]) -> None:
    """A done-callback: mark the outcome seen, so a future whose caller went away
    does not log "exception was never retrieved" (the caller, if any, still gets it)."""
    if not future.cancelled():
        future.exception()
