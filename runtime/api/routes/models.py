"""GET /v1/models and GET /v1/models/{id}: what this key's organisation may use.

Aliases that are plain names (``model_aliases``, not glob patterns) are listed
beside the models. A caller that sends ``anthropic-version`` (an Anthropic
SDK, Claude Code) gets Anthropic's shape: ``data[{type, id, display_name,
created_at}]``, ``has_more``, ``first_id``, ``last_id``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from runtime.api.deps import GatewayDep, KeyDep
from runtime.config import ModelConfig
from runtime.errors import model_not_found

router = APIRouter(tags=["models"])
# Anthropic's models list gives an RFC 3339 time; plugway's models have none, as OpenAI's "created": 0 says.
EPOCH = "1970-01-01T00:00:00Z"


def _model(model: ModelConfig, listed_as: str | None = None) -> dict[str, Any]:
    listed: dict[str, Any] = {"id": listed_as or model.id, "object": "model", "created": 0, "owned_by": model.provider}
    if model.embeddings:
        listed["embeddings"] = True  # serves POST /v1/embeddings
    return listed


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": EPOCH}


def _anthropic_caller(request: Request) -> bool:
    return "anthropic-version" in request.headers


@router.get("/v1/models")
async def list_models(request: Request, gateway: GatewayDep, key: KeyDep) -> Response:
    organisation = gateway.organisation(key.organisation_id)
    entries: list[tuple[str, ModelConfig]] = []
    if organisation is not None:
        entries = [(m.id, m) for m in gateway.models_for(organisation) if key.allows_model(m.id)]
        for alias, target in gateway.model_aliases_for(organisation).items():
            model = gateway.router.model(target)
            if model is not None and key.allows_model(model.id):
                entries.append((alias, model))
    if _anthropic_caller(request):
        data = [_anthropic_model(name) for name, _ in entries]
        page = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
        return Response(orjson.dumps(page), media_type="application/json")
    return Response(orjson.dumps({"object": "list", "data": [_model(m, name) for name, m in entries]}), media_type="application/json")


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, gateway: GatewayDep, key: KeyDep) -> Response:
    organisation = gateway.organisation(key.organisation_id)
    if organisation is None:
        raise model_not_found(model_id)
    model = gateway.resolve_model(organisation, model_id)
    if not key.allows_model(model.id):
        raise model_not_found(model_id)
    if _anthropic_caller(request):
        return Response(orjson.dumps(_anthropic_model(model_id)), media_type="application/json")
    return Response(orjson.dumps(_model(model, model_id)), media_type="application/json")
