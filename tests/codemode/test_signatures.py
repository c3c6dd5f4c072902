"""Python signatures generated from tools' JSON schemas (no gateway needed)."""

from __future__ import annotations

import pytest

from runtime.orchestration.code_mode import annotation, python_name


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "str"),
        ({"type": "integer"}, "int"),
        ({"type": "number"}, "float"),
        ({"type": "boolean"}, "bool"),
        ({"type": "array", "items": {"type": "string"}}, "list[str]"),
        ({"type": "array"}, "list[Any]"),
        ({"type": "object"}, "dict[str, Any]"),
        ({"enum": ["metric", "imperial"]}, "Literal['metric', 'imperial']"),
        ({"const": 3}, "Literal[3]"),
        ({"type": ["string", "null"]}, "str | None"),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, "int | None"),
        ({"anyOf": [{"type": "integer"}, {}]}, "Any"),
        ({}, "Any"),
    ],
)
def test_json_schema_types_become_python_annotations(schema: dict[str, object], expected: str) -> None:
    assert annotation(schema) == expected


@pytest.mark.parametrize(
    ("public", "expected"),
    [("shop__find_customer", "shop__find_customer"), ("my-plugin__get-thing", "my_plugin__get_thing"), ("1x__y", "_1x__y")],
)
def test_tool_names_become_python_identifiers(public: str, expected: str) -> None:
    assert python_name(public) == expected
