"""Vectors as the client asked for them: lists of floats, or base64 of little-endian float32 (OpenAI's format)."""

from __future__ import annotations

import base64
import struct
from typing import Any


def to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def from_base64(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) - len(raw) % 4]))


def as_requested(embedding: Any, encoding_format: str) -> Any:
    """One vector in the requested format, whichever format the provider answered in."""
    if encoding_format == "base64":
        return to_base64(embedding) if isinstance(embedding, list) else embedding
    return from_base64(embedding) if isinstance(embedding, str) else embedding
