"""Tool schemas in the dialect a provider accepts.

MCP servers write full JSON Schema (``$schema``, ``$id``, …); some upstreams
refuse keywords they do not use (Gemini's and other OpenAI-compatible
endpoints answer 400 for ``$schema``). A provider kind's profile names the
keywords its upstreams refuse (``ProviderProfile.tool_schema_drops``); the
router removes them from the function tools of each request it sends there,
wherever they stand as keywords (a property that happens to be called
``$schema`` stays).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from runtime.json_types import JSON

# Where a schema's keys are names (of properties, definitions), not keywords.
_NAMED_SUBSCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_CACHE_SIZE = 64
# (id of the tools list, dropped keywords) -> (that list, its cleaned copy): the loop sends one list every round.
_cleaned: OrderedDict[tuple[int, frozenset[str]], tuple[list[Any], list[Any]]] = OrderedDict()


def _clean(schema: Any, drops: frozenset[str]) -> Any:
    if isinstance(schema, list):
        items = [_clean(item, drops) for item in schema]
        return schema if all(a is b for a, b in zip(items, schema, strict=True)) else items
    if not isinstance(schema, dict):
        return schema
    changed = False
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in drops:
            changed = True
            continue
        if key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
            cleaned: Any = {name: _clean(sub, drops) for name, sub in value.items()}
            if all(cleaned[name] is value[name] for name in value):
                cleaned = value
        else:
            cleaned = _clean(value, drops)
        changed = changed or cleaned is not value
        out[key] = cleaned
    return out if changed else schema


def _clean_tool(tool: Any, drops: frozenset[str]) -> Any:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("parameters"), dict):
        return tool
    parameters = _clean(function["parameters"], drops)
    if parameters is function["parameters"]:
        return tool
    return {**tool, "function": {**function, "parameters": parameters}}


def tools_for_dialect(tools: list[Any], drops: frozenset[str]) -> list[Any]:
    """``tools`` (OpenAI function tools) without the keywords in ``drops``; the same list when none occur."""
    if not drops or not tools:
        return tools
    key = (id(tools), drops)
    hit = _cleaned.get(key)
    if hit is not None and hit[0] is tools:
        _cleaned.move_to_end(key)
        return hit[1]
    cleaned = [_clean_tool(tool, drops) for tool in tools]
    result = tools if all(a is b for a, b in zip(cleaned, tools, strict=True)) else cleaned
    _cleaned[key] = (tools, result)
    while len(_cleaned) > _CACHE_SIZE:
        _cleaned.popitem(last=False)
    return result


def body_for_dialect(body: JSON, drops: frozenset[str]) -> JSON:
    tools = body.get("tools")
    if not drops or not isinstance(tools, list):
        return body
    cleaned = tools_for_dialect(tools, drops)
    return body if cleaned is tools else {**body, "tools": cleaned}
