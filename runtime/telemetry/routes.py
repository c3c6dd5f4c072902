"""GET /metrics: Prometheus' text format, to the scrapers the operator allows.

Metrics name every organisation and what it spends, so who may read them is decided here:

- ``metrics.listen`` set (``host:port``): served only on that separate listener (bind it
  to a private interface); the main port answers 404.
- ``metrics.token`` set: ``Authorization: Bearer <token>`` is needed (401 otherwise).
- neither (the default): the main port serves a loopback peer only, and only a request
  that did not come through a proxy (no ``X-Forwarded-For``, ``Forwarded`` or
  ``X-Real-IP``); anyone else gets 403 naming the two settings. A fresh
  ``plugway serve`` thus shows its metrics to a scraper on the same machine and to
  nobody else.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from runtime.errors import GatewayError
from runtime.telemetry.core import current
from runtime.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])
log = logging.getLogger("plugway.metrics")

_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _not_found() -> GatewayError:
    return GatewayError(404, "Invalid URL (GET /metrics)", code="not_found", type="invalid_request_error")


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _render(request: Request, *, on_listener: bool) -> Response:
    telemetry = current()
    if telemetry.metrics is None:
        raise GatewayError(404, "Metrics are disabled (metrics.enabled: false).", code="not_found", type="invalid_request_error")
    settings = telemetry.settings.metrics if telemetry.settings is not None else None
    listen = settings.listen if settings is not None else None
    if listen is not None and not on_listener:
        raise _not_found()
    if telemetry.metrics_token is not None:
        scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), telemetry.metrics_token.encode()):
            raise GatewayError(
                401, "GET /metrics needs 'Authorization: Bearer <metrics.token>'.", code="invalid_api_key", type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
    elif not on_listener and (not _loopback(request) or any(name in request.headers for name in _FORWARDING_HEADERS)):
        raise GatewayError(
            403,
            "GET /metrics is served to this machine only; set metrics.token or metrics.listen to scrape it from elsewhere.",
            code="insufficient_permissions",
            type="invalid_request_error",
        )
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        await telemetry.refresh(gateway)
    return Response(telemetry.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return await _render(request, on_listener=False)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@asynccontextmanager
async def metrics_listener(listen: str | None, gateway: Any) -> AsyncIterator[None]:
    """Serve GET /metrics alone on ``listen`` for as long as the context lasts (nothing when None).

    With several worker processes each binds the address with SO_REUSEPORT; any of them
    answers, with the metrics of all (they are added up across processes).
    """
    if listen is None:
        yield
        return
    import asyncio

    import uvicorn

    async def scrape(request: Request) -> Response:
        try:
            return await _render(request, on_listener=True)
        except GatewayError as exc:
            # The OpenAI envelope, as runtime.api.errors renders it (telemetry sits below the API).
            return Response(orjson.dumps(exc.envelope()), status_code=exc.status, media_type="application/json", headers=exc.headers)

    app = Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
    app.state.gateway = gateway
    host, port = _parse_listen(listen)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    class ListenerServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the main server owns the process's signals and ends this one with it

    server = ListenerServer(uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
