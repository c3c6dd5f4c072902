"""The model routes served directly, in front of FastAPI's middleware and dependency machinery.

``POST /v1/chat/completions``, ``/v1/responses`` and ``/v1/messages`` carry
nearly all of a gateway's traffic, and their handlers take the same three
things: the gateway, the caller's key and the request id. Going through
FastAPI for them cost about a third of the CPU of a passthrough request (five
middleware layers, a contextvars copy per layer, dependency solving, an exit
stack), so :class:`DirectRoutes` serves them itself, with the same pieces:
the same handler functions, :func:`~runtime.api.deps.authenticate`, our own
request-id and telemetry middleware, and each route's own error envelope.

FastAPI still owns everything else (other methods on these paths get its 405,
the OpenAPI schema documents them from their ``@router`` declarations). With
tracing on, the app factory routes nothing here: FastAPI's native server span,
named by the route it matched, is each request's span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.api.deps import authenticate
from runtime.api.errors import unexpected_error
from runtime.api.middleware import RequestIdMiddleware
from runtime.errors import GatewayError
from runtime.gateway import Gateway
from runtime.storage.keys import KeyInfo
from runtime.telemetry import TelemetryMiddleware

ModelHandler = Callable[[Request, Gateway, KeyInfo, str], Awaitable[Response]]
ErrorResponse = Callable[[GatewayError], Response]


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """One ``POST`` route served directly: its handler and the envelope its errors come in."""

    route: APIRoute  # the FastAPI declaration: telemetry labels requests by its path template
    handler: ModelHandler
    error_response: ErrorResponse

    @classmethod
    def post(cls, router: APIRouter, path: str, error_response: ErrorResponse) -> DirectRoute:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path == path and "POST" in (route.methods or ()):
                return cls(route, route.endpoint, error_response)
        raise LookupError(f"no POST {path} on this router")


class DirectRoutes:
    """ASGI app: the direct routes by path; every other request goes to ``app`` (FastAPI's stack)."""

    def __init__(self, app: ASGIApp, routes: list[DirectRoute]) -> None:
        self.app = app
        self.routes = {route.route.path: route for route in routes}
        self._served = RequestIdMiddleware(TelemetryMiddleware(self._serve))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.routes:
            await self._served(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self.routes[scope["path"]]
        scope["route"] = direct.route
        request = Request(scope, receive, send)
        try:
            gateway: Gateway = scope["app"].state.gateway
            key = await authenticate(request, gateway)
            response = await direct.handler(request, gateway, key, str(scope["state"].get("request_id") or ""))
        except GatewayError as exc:
            response = direct.error_response(exc)
        except Exception as exc:
            response = direct.error_response(unexpected_error(exc))
        await response(scope, receive, send)
