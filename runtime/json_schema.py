"""JSON Schema checks with one way of saying where a value is wrong.

Tool arguments (``runtime.orchestration.tools``), an endpoint's input and its
structured output (``runtime.endpoints.pipeline``) are all checked here, so the
model and the caller read the same "at <path>: <what>" wherever it failed.
"""

from __future__ import annotations

from typing import Any

import jsonschema


def validator_for(schema: Any) -> Any:
    """A validator of the draft ``schema`` declares (2020-12 when it declares none)."""
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)


def checked_validator_for(schema: Any) -> Any | None:
    """As :func:`validator_for`, or None when ``schema`` is not a valid schema (a third party's, say)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


def mismatch(validator: Any, instance: Any) -> str | None:
    """Where and how ``instance`` fails ``validator`` ("at <path>: <message>"), or None when it passes."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"
