"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from runtime.api import sse
from runtime.api.body import read_body
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.disconnect import run_until_disconnected
from runtime.api.middleware import use_request_id
from runtime.api.openapi import documented_body
from runtime.errors import GatewayError, UpstreamError, invalid_request
from runtime.frontdoors.chat.encoder import ChatStreamEncoder, chat_completion
from runtime.frontdoors.chat.schema import ChatCompletionRequest
from runtime.frontdoors.chat.validation import validate_chat_request
from runtime.gateway import Gateway, requested_model
from runtime.json_types import JSON
from runtime.orchestration.events import Event
from runtime.request import DoorRules, KeepAlive, PluginRequest, RequestContext, RunRequest

router = APIRouter()
# OpenAI-compatible: the organisation's guardrails_default apply.
CHAT_DOOR = DoorRules("api", guardrails_default=True)


def _refuse_streamed_n_when_orchestrating(body: JSON) -> Any:
    def check(ctx: RequestContext) -> None:
        if ctx.plugins and (body.get("n") or 1) > 1 and body.get("stream"):
            raise invalid_request(
                "'n' greater than 1 is not supported with 'stream' when the gateway runs tools; send stream: false.", param="n"
            )

    return check


async def _run_choices(gateway: Gateway, ctx: RequestContext, run: RunRequest, n: int) -> JSON:
    """``n`` > 1 with server-side tools: ``n`` independent loops, one choice each, usage summed.

    A provider's own ``n`` would share one set of tool calls between the choices; each
    loop asks for one choice instead. Each run records its own usage (billed and
    limited like any run); the answer's ``usage`` is their sum and ``plugway`` holds
    every choice's trace under ``choices``.
    """
    single = RunRequest({**run.body, "n": 1}, stream=False)
    results = await asyncio.gather(*(gateway.run(ctx, single) for _ in range(n)))
    answers = [chat_completion(result, requested_model(ctx)) for result in results]
    merged = answers[0]
    merged["choices"] = [{**answer["choices"][0], "index": index} for index, answer in enumerate(answers)]
    merged["usage"] = _summed([answer["usage"] for answer in answers])
    merged["plugway"] = {**answers[0]["plugway"], "choices": [answer["plugway"] for answer in answers]}
    return merged


def _summed(usages: list[JSON]) -> JSON:
    total: JSON = {}
    for usage in usages:
        for name, value in (usage or {}).items():
            if isinstance(value, dict):
                total[name] = _summed([total.get(name) or {}, value])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
            else:
                total.setdefault(name, value)
    return total


def parse_json_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("We could not parse the JSON body of your request.") from None


async def sse_stream(
    head: bytes, events: AsyncIterator[Event | KeepAlive], encoder: ChatStreamEncoder
) -> AsyncIterator[bytes]:
    try:
        yield head
        async for event in events:
            chunk = encoder.encode(event)
            if chunk:
                yield chunk
    except (GatewayError, UpstreamError) as exc:
        error = exc.envelope() if isinstance(exc, GatewayError) else {
            "error": {"message": exc.message, "type": "api_error", "param": None, "code": "upstream_unavailable"}
        }
        yield sse.data(error)
        return
    yield sse.DONE


@router.post("/v1/chat/completions", openapi_extra=documented_body(ChatCompletionRequest))
async def chat_completions(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    body = parse_json_body(await read_body(request, gateway.settings.max_body_bytes))
    validate_chat_request(body)
    if body.get("request_id") is not None:
        # The body's request_id is the correlation id, as X-Request-Id would be.
        request_id = use_request_id(request.scope, body["request_id"])
    plugin_ids = body.get("enabled_plugin_ids")
    ctx = await gateway.admit(
        CHAT_DOOR,
        key=key,
        request_id=request_id,
        model=body["model"],
        plugins=None if plugin_ids is None else [PluginRequest(p, "enabled_plugin_ids") for p in plugin_ids],
        server_tools=not body.get("tools"),
        check=_refuse_streamed_n_when_orchestrating(body),
        body=body,
    )
    run = RunRequest(body, stream=bool(body.get("stream")), mode=body.get("orchestration_mode"))
    headers = ctx.limits.headers()

    if run.stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        encoder = ChatStreamEncoder(model_id=requested_model(ctx), include_usage=include_usage)
        events = gateway.stream(ctx, run)
        # Read until the first bytes for the client, so that an upstream failure is a real HTTP status.
        head = b""
        async for event in events:
            head = encoder.encode(event) or b""
            if head:
                break
        return StreamingResponse(
            sse_stream(head, events, encoder),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )

    choices = body.get("n") or 1
    if ctx.plugins and choices > 1:
        answer = await run_until_disconnected(request, _run_choices(gateway, ctx, run, choices))
    elif ctx.plugins:
        # Tool rounds can take long: a client that hangs up cancels them.
        answer = chat_completion(await run_until_disconnected(request, gateway.run(ctx, run)), requested_model(ctx))
    else:
        answer = chat_completion(await gateway.run(ctx, run), requested_model(ctx))
    if body.get("request_id") is not None:
        answer["request_id"] = request_id
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)
