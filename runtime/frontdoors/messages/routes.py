"""POST /v1/messages (and /v1/messages/count_tokens): Anthropic's Messages API, for any model.

Every answer on these routes is Anthropic-shaped, errors included:
``{"type": "error", "error": {"type", "message"}}`` with Anthropic's error
types, so the ``anthropic`` SDKs raise their own exception classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response, StreamingResponse

from runtime.api import sse
from runtime.api.body import read_json
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.disconnect import run_until_disconnected
from runtime.api.openapi import documented_body
from runtime.errors import GatewayError, UpstreamError
from runtime.frontdoors.carry import admitted_headers
from runtime.frontdoors.messages.encoder import PROGRESS, MessagesEncoder, Out
from runtime.frontdoors.messages.native import NativeEvent, native_message, native_stream
from runtime.frontdoors.messages.schema import CountTokensRequest, MessagesRequestBody
from runtime.frontdoors.messages.translate import (
    MCP_CLIENT_BETA,
    MessagesRequest,
    carries_foreign_reasoning,
    chat_body,
    check_server_urls,
    has_server_blocks,
    parse_request,
    reasoning_effort,
    thinking_requested,
    translated_ignored,
)
from runtime.gateway import Gateway, requested_model
from runtime.json_types import JSON
from runtime.limits.reservation import estimated_tokens
from runtime.orchestration.events import Event
from runtime.providers.anthropic_translate import (
    ANTHROPIC_BETA,
    NATIVE_CARRY,
    anthropic_error_type,
    native_carry,
    openai_messages,
)
from runtime.request import DoorRules, KeepAlive, RequestContext, RunRequest, RunState

# Anthropic-compatible: the organisation's guardrails_default apply, on the native path too.
MESSAGES_DOOR = DoorRules("messages", guardrails_default=True)
# Counting tokens spends nothing, so no budget; the key's scope, model allow-list and limits hold.
COUNT_TOKENS_DOOR = DoorRules("messages", budget=False, billed=False)


def anthropic_error(status: int, message: str) -> JSON:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def error_response(error: GatewayError) -> Response:
    message = error.message
    if error.param and error.param not in message:
        # Anthropic's envelope has no 'param': the message names the field, index included.
        message = f"{error.param}: {message}"
    return Response(orjson.dumps(anthropic_error(error.status, message)), status_code=error.status, media_type="application/json", headers=error.headers)


class AnthropicErrorRoute(APIRoute):
    """Routes whose errors (authentication and limits included) come in Anthropic's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as exc:
                return error_response(exc)

        return route


router = APIRouter(tags=["messages"], route_class=AnthropicErrorRoute)


def _encode(out: Out) -> bytes:
    return b"".join(sse.tool_progress(data) if name == PROGRESS else sse.named(name, data) for name, data in out)


async def _stream(head: bytes, events: AsyncIterator[Any], encode: Callable[[Any], Out]) -> AsyncIterator[bytes]:
    try:
        yield head
        async for event in events:
            out = encode(event)
            if out:
                yield _encode(out)
    except GatewayError as exc:
        yield sse.named("error", anthropic_error(exc.status, exc.message))
    except UpstreamError as exc:
        yield sse.named("error", anthropic_error(502, exc.message))


async def _first_bytes(head: bytes, events: AsyncIterator[Any], encode: Callable[[Any], Out]) -> bytes:
    """Read until the first bytes for the client, so that an upstream failure is a real HTTP status."""
    return head + await sse.first_bytes(events, lambda event: _encode(out) if (out := encode(event)) else b"")


def _streaming(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return sse.response(body, headers)


def _native_encode(event: NativeEvent | KeepAlive) -> Out:
    if isinstance(event, KeepAlive):
        return [("ping", {"type": "ping"})]
    return [(event.name, event.data)]


async def _native(request: Request, gateway: Gateway, ctx: RequestContext, parsed: MessagesRequest) -> Response:
    state = RunState(request_id=ctx.request_id, model=ctx.model.id, organisation=ctx.organisation.id)
    headers = ctx.limits.headers()
    if parsed.stream:
        events = gateway.stream_events(ctx, state, native_stream(gateway.router, ctx, parsed.body, state))
        head = await _first_bytes(b"", events, _native_encode)
        return _streaming(_stream(head, events, _native_encode), headers)
    async with gateway.accounting(ctx, state):
        message = await native_message(gateway.router, ctx, parsed.body, state)
    return Response(orjson.dumps(message), media_type="application/json", headers=headers)


def client_betas(request: Request) -> list[str]:
    """The betas the client asked for (``anthropic-beta``, comma-separated, possibly repeated)."""
    return [beta.strip() for value in request.headers.getlist(ANTHROPIC_BETA) for beta in value.split(",") if beta.strip()]


def _native_loop_body(parsed: MessagesRequest, chat: JSON, ctx: RequestContext, betas: list[str], beta_query: bool, *, verbatim: bool) -> JSON:
    """The loop's chat body with the client's own request carried for an all-Anthropic chain.

    The client's messages go verbatim unless plugway must read them: input
    guardrails redact the translated messages (the system prompt too), and
    server-side executions an earlier answer showed (``mcp_tool_use``, ...) were
    never Anthropic's blocks, so those turns go translated (thinking kept), as do
    turns holding another model's reasoning (``verbatim`` false).
    """
    native = dict(parsed.body)
    guarded = ctx.guardrails is not None and ctx.guard_input and ctx.guardrails.applies_to("input")
    if guarded:
        native.pop("system", None)
    verbatim = verbatim and not guarded and not has_server_blocks(native.get("messages"))
    prefix = len(chat["messages"]) if verbatim else None
    return {**chat, NATIVE_CARRY: native_carry(native, betas=betas, beta_query=beta_query, prefix=prefix)}


@router.post("/v1/messages", openapi_extra=documented_body(MessagesRequestBody))
async def create_message(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    body = await read_json(request, gateway.settings.max_body_bytes)
    parsed = parse_request(body)
    betas = client_betas(request)
    beta_query = request.query_params.get("beta") == "true"
    # Server-side calls are shown as MCP connector blocks only to clients that used the connector.
    mcp_blocks = parsed.plugins is not None or any(beta.startswith(MCP_CLIENT_BETA) for beta in betas)

    def check(ctx: RequestContext) -> None:
        check_server_urls(body.get("mcp_servers"), ctx.organisation)

    ctx = await gateway.admit(
        MESSAGES_DOOR,
        key=key,
        request_id=request_id,
        model=parsed.model,
        plugins=parsed.plugins,
        server_tools=parsed.server_tools,
        check=check,
        body=body,
    )
    speaks_messages = gateway.router.speaks_natively(ctx.model, "messages")
    # Reasoning items another model made, carried in thinking blocks, cannot go to Anthropic verbatim.
    foreign = carries_foreign_reasoning(parsed.body["messages"])
    if speaks_messages and not foreign and not await gateway.orchestrator.toolset(ctx):
        parsed.body[NATIVE_CARRY] = native_carry(None, betas=betas, beta_query=beta_query)
        return await _native(request, gateway, ctx, parsed)
    chat = chat_body(parsed, keep_top_k=speaks_messages)
    if speaks_messages:
        # Anthropic all along the chain: every field goes as the client sent it, plugin tools merged in.
        chat = _native_loop_body(parsed, chat, ctx, betas, beta_query, verbatim=not foreign)
        ignored: list[str] = []
    else:
        ignored = translated_ignored(parsed, keep_top_k=False)
        if gateway.router.speaks_natively(ctx.model, "responses"):
            # A Responses-native model reasons at the effort asked; its reasoning items reach the
            # client inside thinking blocks, which it echoes back (runtime.reasoning).
            effort, mapped = reasoning_effort(parsed.body)
            if effort is not None:
                chat["reasoning_effort"] = effort
            ignored = [name for name in ignored if name not in mapped]
    headers = admitted_headers(gateway, ctx, ignored)
    run = RunRequest(chat, stream=parsed.stream)
    encoder = MessagesEncoder(model_id=requested_model(ctx), mcp_blocks=mcp_blocks, carry_reasoning=thinking_requested(parsed.body))
    if run.stream:
        events = gateway.stream(ctx, run)
        encode: Callable[[Event | KeepAlive], Out] = encoder.encode
        head = await _first_bytes(_encode(encoder.start()), events, encode)
        return _streaming(_stream(head, events, encode), headers)
    work = gateway.run(ctx, run)
    result = await (run_until_disconnected(request, work) if ctx.plugins else work)
    for event in result.events:
        encoder.encode(event)
    return Response(orjson.dumps(encoder.message), media_type="application/json", headers=headers)


@router.post("/v1/messages/count_tokens", openapi_extra=documented_body(CountTokensRequest))
async def count_tokens(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    """An estimate (about four characters a token) of what a request's input costs; admitted like any call."""
    body = await read_json(request, gateway.settings.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise GatewayError(400, "model: Field required", code="invalid_request_error", param="model")
    ctx = await gateway.admit(COUNT_TOKENS_DOOR, key=key, request_id=request_id, model=body["model"], plugins=None, server_tools=False)
    messages = openai_messages(body.get("system"), body.get("messages"))
    size = len(orjson.dumps(messages)) + len(orjson.dumps(body.get("tools") or []))
    return Response(orjson.dumps({"input_tokens": max(1, estimated_tokens(size))}), media_type="application/json", headers=ctx.limits.headers())
