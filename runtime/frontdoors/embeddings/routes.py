"""POST /v1/embeddings: admission as for chat, the router's retries and fallbacks, usage billed by prompt tokens."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from opentelemetry.trace import SpanKind
from starlette.responses import Response

from runtime.api.body import read_json
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.openapi import documented_body
from runtime.errors import invalid_request
from runtime.frontdoors.embeddings.encoding import as_requested
from runtime.frontdoors.embeddings.schema import (
    EmbeddingRequest,
    EmbeddingRequestSchema,
    parse_embedding_request,
)
from runtime.gateway import Gateway
from runtime.json_types import JSON
from runtime.request import DoorRules, RequestContext, RunState
from runtime.telemetry import current as telemetry

router = APIRouter(tags=["embeddings"])
EMBEDDINGS_DOOR = DoorRules("embeddings", scope="embeddings", produces_output=False)


def _can_embed(gateway: Gateway) -> Any:
    """Admission's front-door check: the model must be configured for embeddings, on a provider that has them."""

    def check(ctx: RequestContext) -> None:
        model = ctx.model
        if not gateway.router.can_embed(model):
            raise invalid_request(
                f"The model '{model.id}' is served by a provider of kind '{gateway.router.provider_kind(model)}', which has no embeddings API.", param="model"
            )
        if not model.embeddings:
            raise invalid_request(
                f"The model '{model.id}' is not configured for embeddings (set 'embeddings: true' on the model).", param="model"
            )

    return check


@router.post("/v1/embeddings", openapi_extra=documented_body(EmbeddingRequestSchema))
async def create_embeddings(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    body = await read_json(request, gateway.settings.max_body_bytes)
    parsed = parse_embedding_request(body)
    ctx = await gateway.admit(
        EMBEDDINGS_DOOR,
        key=key,
        request_id=request_id,
        model=parsed.model,
        plugins=None,
        server_tools=False,
        check=_can_embed(gateway),
        body=body,
    )
    state = RunState(request_id=ctx.request_id, model=ctx.model.id, organisation=ctx.organisation.id)
    async with gateway.accounting(ctx, state):
        answer = await _embed(gateway, ctx, parsed, state)
    return Response(orjson.dumps(answer), media_type="application/json", headers=ctx.limits.headers())


async def _embed(gateway: Gateway, ctx: RequestContext, parsed: EmbeddingRequest, state: RunState) -> JSON:
    state.round_started()
    attributes: JSON = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": ctx.model.upstream, "plugway.model": ctx.model.id}
    if parsed.dimensions is not None:
        attributes["gen_ai.embeddings.dimension.count"] = parsed.dimensions
    with telemetry().span(f"embeddings {ctx.model.upstream}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        upstream = await gateway.router.embeddings(ctx.model, parsed.body, state.route)
        usage = upstream.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0) or parsed.estimated_tokens
        state.answered({"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens})
        span.set("gen_ai.usage.input_tokens", prompt_tokens)
    data = [
        {"object": "embedding", "index": item.get("index", position), "embedding": as_requested(item.get("embedding"), parsed.encoding_format)}
        for position, item in enumerate(upstream["data"])
        if isinstance(item, dict)
    ]
    answer: JSON = {
        "object": "list",
        "data": data,
        "model": ctx.model.id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    if "plugway_demo" in upstream:
        answer["plugway_demo"] = upstream["plugway_demo"]
    return answer
