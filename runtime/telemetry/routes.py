"""GET /metrics: Prometheus' text format, optionally behind a bearer token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from starlette.responses import Response

from runtime.errors import GatewayError
from runtime.telemetry.core import current
from runtime.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    telemetry = current()
    if telemetry.metrics is None:
        raise GatewayError(404, "Metrics are disabled (metrics.enabled: false).", code="not_found", type="invalid_request_error")
    if telemetry.metrics_token is not None:
        scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), telemetry.metrics_token.encode()):
            raise GatewayError(
                401, "GET /metrics needs 'Authorization: Bearer <metrics.token>'.", code="invalid_api_key", type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        await telemetry.refresh(gateway)
    return Response(telemetry.metrics.render(), media_type=CONTENT_TYPE)
