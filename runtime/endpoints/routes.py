"""POST /api/{organisation}/{slug} and the dispatcher POST /api/{organisation}/chat/completions."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from runtime.api import sse
from runtime.api.body import read_json
from runtime.api.deps import KeyDep, RequestIdDep
from runtime.api.middleware import use_request_id
from runtime.api.openapi import documented_body
from runtime.endpoints.pipeline import EndpointError, EndpointService
from runtime.endpoints.schema import DispatchRequest, EndpointRequest
from runtime.errors import GatewayError


def error_response(error: EndpointError) -> Response:
    return Response(orjson.dumps(error.body()), status_code=error.status, media_type="application/json", headers=error.headers)


class EndpointErrorRoute(APIRoute):
    """Every error on these routes, authentication included, as ``{"ok": false, "error", "code"}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except EndpointError as exc:
                return error_response(exc)
            except GatewayError as exc:
                return error_response(EndpointError.from_gateway(exc))

        return route


router = APIRouter(tags=["endpoints"], route_class=EndpointErrorRoute)


async def _serve(request: Request, key: Any, request_id: str, organisation: str, slug: str | None, body: Any) -> Response:
    service: EndpointService = request.app.state.endpoints
    if slug is None:
        slug = body.get("endpoint") if isinstance(body, dict) else None
        if not isinstance(slug, str) or not slug:
            raise EndpointError(400, "invalid_request", "Name the endpoint: {\"endpoint\": \"<slug>\", ...}.")
        body = {k: v for k, v in body.items() if k != "endpoint"}
    if isinstance(body, dict) and isinstance(body.get("request_id"), str):
        request_id = use_request_id(request.scope, body["request_id"])
    prepared = await service.prepare(key=key, organisation_id=organisation, slug=slug, body=body, request_id=request_id)
    headers = prepared.ctx.limits.headers()
    if prepared.call.stream:
        return sse.response(service.stream(prepared), headers)
    answer = await service.complete(prepared)
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)


async def _body(request: Request) -> Any:
    return await read_json(request, request.app.state.gateway.settings.max_body_bytes)


@router.post("/api/{organisation}/chat/completions", openapi_extra=documented_body(DispatchRequest))
async def dispatch(organisation: str, request: Request, key: KeyDep, request_id: RequestIdDep) -> Response:
    return await _serve(request, key, request_id, organisation, None, await _body(request))


@router.post("/api/{organisation}/{slug}", openapi_extra=documented_body(EndpointRequest))
async def call_endpoint(organisation: str, slug: str, request: Request, key: KeyDep, request_id: RequestIdDep) -> Response:
    return await _serve(request, key, request_id, organisation, slug, await _body(request))
