"""The one alias for a JSON object as the wire formats carry it (a request body, a chunk, a tool call)."""

from typing import Any

JSON = dict[str, Any]
