"""Valid example instances of a JSON Schema, for the offline demo model's structured outputs.

Deterministic: the same schema and text give the same instance. Covers what
structured-output schemas use (objects, arrays, enums, consts, ``$ref`` and
``$defs``, ``anyOf``/``oneOf``/``allOf``, string formats and length bounds,
numeric bounds and ``multipleOf``). Patterns cannot be satisfied in general;
the result is checked with ``jsonschema`` by the caller.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from runtime.json_types import JSON

_MAX_DEPTH = 12

_FORMATS = {
    "date": lambda: datetime.now(UTC).date().isoformat(),
    "date-time": lambda: datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    "time": lambda: "12:00:00Z",
    "email": lambda: "demo@example.com",
    "uri": lambda: "https://example.com/",
    "url": lambda: "https://example.com/",
    "uuid": lambda: "00000000-0000-4000-8000-000000000000",
    "ipv4": lambda: "192.0.2.1",
    "ipv6": lambda: "2001:db8::1",
    "hostname": lambda: "example.com",
}


def example_instance(schema: Any, *, text: str = "") -> Any:
    """An instance of ``schema``; string values echo ``text`` (the user's words) where they fit."""
    root = schema if isinstance(schema, dict) else {}
    return _example(root, root, text, "value", 0)


def _resolve(ref: str, root: JSON) -> JSON:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _example(schema: Any, root: JSON, text: str, name: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _example({**_resolve(schema["$ref"], root), **{k: v for k, v in schema.items() if k != "$ref"}}, root, text, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema and schema["enum"]:
        lowered = text.lower()
        for option in schema["enum"]:
            if isinstance(option, str) and option.lower() in lowered:
                return option
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if isinstance(o, dict) and o.get("type") != "null"), options[0])
            return _example(chosen, root, text, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: JSON = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                for key, value in part.items():
                    if key in ("properties", "required") and key in merged:
                        merged[key] = {**merged[key], **value} if key == "properties" else [*merged[key], *value]
                    else:
                        merged[key] = value
        return _example(merged, root, text, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {key: _example(value, root, text, key, depth + 1) for key, value in properties.items() if isinstance(key, str)}
    if kind == "array":
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        prefix_items = schema.get("prefixItems")
        prefix: list[Any] = prefix_items if isinstance(prefix_items, list) else []
        values = [_example(item, root, text, name, depth + 1) for item in prefix]
        count = max(int(schema.get("minItems") or 0), 1 if not prefix else 0)
        maximum = schema.get("maxItems")
        if isinstance(maximum, int):
            count = min(count, max(0, maximum - len(values)))
        values.extend(_example(items, root, text, name, depth + 1) for _ in range(count))
        return values
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text, name)


def _number(schema: JSON, *, integer: bool) -> int | float:
    low = schema.get("minimum")
    exclusive_low = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    exclusive_high = schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    value: float = 0
    if isinstance(low, int | float):
        value = max(value, low) if not isinstance(high, int | float) or high >= 0 else low
    if isinstance(exclusive_low, int | float) and value <= exclusive_low:
        value = exclusive_low + (1 if integer else 0.5)
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(exclusive_high, int | float) and value >= exclusive_high:
        value = exclusive_high - (1 if integer else 0.5)
    if isinstance(step, int | float) and step > 0:
        value = math.ceil(value / step) * step
    if integer:
        return int(math.ceil(value))
    return float(value)


def _string(schema: JSON, text: str, name: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return str(_FORMATS[fmt]())
    value = text.strip() or f"[demo] {name}"
    minimum = schema.get("minLength")
    maximum = schema.get("maxLength")
    if isinstance(maximum, int) and len(value) > maximum:
        value = value[:maximum]
    if isinstance(minimum, int) and len(value) < minimum:
        value = value.ljust(minimum, ".")
    return value
