"""Request bodies in the OpenAPI schema for routes that read and check their body themselves.

The hot routes parse JSON with orjson and validate by hand (unknown OpenAI
fields pass through; pydantic parsing of every body would cost CPU on every
request). :func:`documented_body` still gives them a real request-body schema,
from pydantic models, so that generated clients and schema-driven fuzzing
(schemathesis in the test suite) can reach them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"
_documented: dict[str, type[BaseModel]] = {}


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is described by ``model``."""
    _documented[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}},
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Build the schema once, with every documented body's definitions under components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if _documented:
            _, definitions = models_json_schema(
                [(model, "validation") for model in _documented.values()], ref_template=REF_TEMPLATE
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in definitions.get("$defs", {}).items():
                components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
