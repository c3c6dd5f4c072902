"""GET /v1/models and GET /v1/models/{id}: what this key's organisation may use."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from runtime.api.deps import GatewayDep, KeyDep
from runtime.config import ModelConfig
from runtime.errors import model_not_found

router = APIRouter(tags=["models"])


def _model(model: ModelConfig) -> dict[str, Any]:
    listed: dict[str, Any] = {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
    if model.embeddings:
        listed["embeddings"] = True  # serves POST /v1/embeddings
    return listed


@router.get("/v1/models")
async def list_models(gateway: GatewayDep, key: KeyDep) -> Response:
    organisation = gateway.organisation(key.organisation_id)
    models = [m for m in gateway.models_for(organisation) if key.allows_model(m.id)] if organisation else []
    return Response(orjson.dumps({"object": "list", "data": [_model(m) for m in models]}), media_type="application/json")


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, gateway: GatewayDep, key: KeyDep) -> Response:
    organisation = gateway.organisation(key.organisation_id)
    if organisation is None:
        raise model_not_found(model_id)
    model = gateway.resolve_model(organisation, model_id)
    if not key.allows_model(model.id):
        raise model_not_found(model_id)
    return Response(orjson.dumps(_model(model)), media_type="application/json")
