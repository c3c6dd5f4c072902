"""``/mcp``: the route, its authentication, and the session manager's life inside the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from runtime.admission import check_scope
from runtime.api.deps import authenticate, authenticated_as, presented_key
from runtime.api.errors import error_response
from runtime.errors import GatewayError, invalid_api_key
from runtime.frontdoors.mcp.server import MCP_CALL_DOOR, PluginToolServer, caller_organisation
from runtime.gateway import Gateway
from runtime.storage.keys import KeyInfo

# A handshake-era session with no request and no open stream for this long is closed.
SESSION_IDLE_S = 30 * 60.0


def require_mcp_scope(key: KeyInfo) -> None:
    """Refuse a key whose scopes leave out ``mcp`` (403 ``insufficient_permissions``)."""
    check_scope(key, MCP_CALL_DOOR.scope)


class BearerTokens(Protocol):
    """Bearer credentials other than gateway keys: OAuth access tokens (``runtime.oauth``), when installed."""

    def handles(self, presented: str) -> bool: ...

    async def resolve(self, request: Request, presented: str) -> KeyInfo | None: ...

    def challenge(self, request: Request) -> str:
        """Parameters added to ``WWW-Authenticate: Bearer`` on a 401 (RFC 9728's ``resource_metadata``)."""
        ...


def bearer_tokens(request: Request) -> BearerTokens | None:
    tokens: BearerTokens | None = getattr(request.app.state, "mcp_bearer", None)
    return tokens


async def authenticate_caller(request: Request, gateway: Gateway) -> KeyInfo:
    """A gateway key, or an OAuth access token acting as one."""
    tokens = bearer_tokens(request)
    presented = presented_key(request)
    if tokens is not None and presented is not None and tokens.handles(presented):
        info = await tokens.resolve(request, presented)
        if info is None:
            raise invalid_api_key("The access token is unknown, expired, revoked or issued for another resource.")
        return authenticated_as(request, info)
    return await authenticate(request, gateway)


def refusal(error: GatewayError, *, credentials_sent: bool = False, request: Request | None = None) -> Response:
    response = error_response(error)
    if error.status == 401:
        # What MCP clients (RFC 6750) expect of a server that wants a bearer token; with OAuth,
        # where to find out how to get one (RFC 9728 §5.1).
        invalid = ', error="invalid_token"' if credentials_sent else ""
        tokens = bearer_tokens(request) if request is not None else None
        discovery = f", {tokens.challenge(request)}" if tokens is not None and request is not None else ""
        response.headers["WWW-Authenticate"] = f'Bearer realm="plugway"{invalid}{discovery}'
    return response


# JSON-RPC 2.0's code for a request that is not a valid Request object.
JSONRPC_INVALID_REQUEST = -32600


def jsonrpc_error_response(error: GatewayError) -> Response:
    """A refusal of the body itself (too large, too slow) as a JSON-RPC error, as MCP clients read one."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": JSONRPC_INVALID_REQUEST, "message": error.message}}
    return Response(orjson.dumps(body), status_code=error.status, media_type="application/json", headers=error.headers)


def malformed_id(body: bytes) -> str | None:
    """Why a JSON-RPC message's ``id`` is unusable (not a string or an integer), or None.

    The SDK reads a request whose ``id`` is an object, a float, a boolean or null as a
    notification and answers an empty 202: the client would wait for an answer forever.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the SDK answers a parse error itself
    for message in parsed if isinstance(parsed, list) else [parsed]:
        if isinstance(message, dict) and "id" in message:
            value = message["id"]
            if isinstance(value, bool) or not isinstance(value, str | int):
                return "A JSON-RPC message's 'id' must be a string or an integer."
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the body already read to the SDK, then waits for the client as before."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class McpFrontDoor:
    """Mount with :meth:`route`; run :meth:`serving` in the app's lifespan around its ``yield``."""

    def __init__(self, path: str = "/mcp", *, poll_s: float = 1.0) -> None:
        self.path = path
        self.poll_s = poll_s
        self.tools: PluginToolServer | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._route: Route | None = None

    def route(self) -> Route:
        # An ASGI app (not a function) as endpoint: Starlette hands it the raw request and
        # lets the SDK stream; HEAD comes with GET.
        self._route = Route(self.path, endpoint=self, methods=["GET", "POST", "DELETE"], include_in_schema=False)
        return self._route

    @asynccontextmanager
    async def serving(self, gateway: Gateway) -> AsyncIterator[None]:
        """Run the session manager (it can run once: a new one per lifespan)."""
        tools = PluginToolServer(gateway, poll_s=self.poll_s, session_idle_s=SESSION_IDLE_S)
        manager = StreamableHTTPSessionManager(
            app=tools.server,
            max_request_body_size=gateway.settings.max_body_bytes,
            session_idle_timeout=SESSION_IDLE_S,
            # No DNS-rebinding host check: every request must carry a gateway key, which a
            # page in a browser (the attack that check is for) does not have.
            security_settings=None,
        )
        async with manager.run():
            self.tools, self._manager = tools, manager
            try:
                yield
            finally:
                self.tools = self._manager = None
                await tools.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette names only FastAPI's routes in the scope: name this one, so that metrics
        # and the request log say /mcp rather than "unmatched".
        scope["route"] = self._route
        tools, manager = self.tools, self._manager
        if tools is None or manager is None:
            stopped = GatewayError(503, "The MCP server is not running.", code="service_unavailable", type="api_error")
            await refusal(stopped)(scope, receive, send)
            return
        request = Request(scope, receive)
        # The key is checked on every HTTP request, before the SDK reads any MCP message.
        try:
            key = await authenticate_caller(request, tools.gateway)
            require_mcp_scope(key)
        except GatewayError as exc:
            sent = "authorization" in request.headers or "x-api-key" in request.headers
            await refusal(exc, credentials_sent=sent, request=request)(scope, receive, send)
            return
        # The SDK binds each session to the principal that opened it: another key presenting
        # the session id gets 404, as if the session did not exist.
        if request.method == "POST":
            # Read here (the guard caps it) to refuse what the SDK would take for a notification.
            body = await request.body()
            refused = malformed_id(body)
            if refused is not None:
                await jsonrpc_error_response(GatewayError(400, refused, code="invalid_request_error"))(scope, receive, send)
                return
            receive = _replay(body, receive)
        scope["user"] = AuthenticatedUser(AccessToken(token=key.id, client_id=key.id, scopes=["mcp"]))
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        organisation = caller_organisation.set(key.organisation_id)
        if session_id is not None:
            tools.changes.request_started(session_id)
        try:
            await manager.handle_request(scope, receive, send_noting_status)
        finally:
            caller_organisation.reset(organisation)
            if session_id is not None:
                gone = request.method == "DELETE" or status == 404
                tools.changes.request_finished(session_id, session_gone=gone)
                if gone:
                    tools.session_ended(session_id)
