"""Every error response in OpenAI's envelope."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from runtime.errors import GatewayError, database_unavailable
from runtime.storage.engine import OUTAGE_ERRORS

log = logging.getLogger("plugway.api")


def error_response(error: GatewayError) -> Response:
    return Response(
        orjson.dumps(error.envelope()),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def unexpected_error(exc: Exception) -> GatewayError:
    """What an exception no route turned into an answer becomes, on every route: the
    database's outage a 503 the client may retry, anything else a logged 500."""
    if isinstance(exc, OUTAGE_ERRORS):
        log.warning("the database is unreachable: answering 503 (%s)", type(exc).__name__)
        return database_unavailable()
    log.error("unhandled error", exc_info=exc)
    return GatewayError(500, "The gateway had an internal error.", code="internal_error", type="api_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query")) or None
        return error_response(GatewayError(400, str(first["msg"]), code="invalid_request_error", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            # As OpenAI words it, so a client calling a route that does not exist sees which one.
            message = f"Invalid URL ({request.method} {request.url.path})"
        return error_response(
            GatewayError(exc.status_code, message, code=code, type="invalid_request_error", headers=dict(exc.headers or {}))
        )

    async def _unexpected(_request: Request, exc: Exception) -> Response:
        return error_response(unexpected_error(exc))

    # Starlette picks a handler by the exception's class: the outages are named, not left to Exception's.
    for unexpected in (*OUTAGE_ERRORS, Exception):
        app.add_exception_handler(unexpected, _unexpected)
