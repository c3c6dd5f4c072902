"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from runtime.api.body import read_body
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.validation import validate_chat_request
from runtime.errors import (
    GatewayError,
    UpstreamError,
    invalid_request,
    rate_limit_exceeded,
    rate_limiter_unavailable,
)
from runtime.gateway import Gateway
from runtime.limits import LimitDecision, LimiterUnavailable
from runtime.orchestration.loop import Comment, StreamEvent
from runtime.storage.keys import KeyInfo

router = APIRouter()
DONE = b"data: [DONE]\n\n"


def encode_event(event: StreamEvent) -> bytes:
    if isinstance(event, Comment):
        return b": " + event.text.encode() + b"\n\n"
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def sse(first: StreamEvent | None, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield encode_event(first)
        async for event in events:
            yield encode_event(event)
    except (GatewayError, UpstreamError) as exc:
        error = exc.envelope() if isinstance(exc, GatewayError) else {
            "error": {"message": exc.message, "type": "api_error", "param": None, "code": "upstream_unavailable"}
        }
        yield b"data: " + orjson.dumps(error) + b"\n\n"
        return
    yield DONE


async def check_limits(gateway: Gateway, key: KeyInfo) -> LimitDecision:
    try:
        decision = await gateway.limiter.acquire(key.id, rpm=key.rpm, daily_tokens=key.daily_tokens)
    except LimiterUnavailable:
        raise rate_limiter_unavailable() from None
    if not decision.allowed:
        raise rate_limit_exceeded(
            decision.message(),
            limit_type="requests" if decision.reason == "rpm" else "tokens",
            headers=decision.headers(),
        )
    return decision


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    raw = await read_body(request, gateway.settings.max_body_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("We could not parse the JSON body of your request.") from None
    validate_chat_request(body)
    organisation = gateway.organisation(key.organisation_id)
    if organisation is None:
        raise GatewayError(403, "This key's organisation is no longer configured.", code="organisation_not_configured", type="permission_error")
    gateway.resolve_model(organisation, body["model"])
    plugin_ids = body.get("enabled_plugin_ids")
    if plugin_ids is not None:
        unknown = [p for p in plugin_ids if organisation.plugin(p) is None]
        if unknown:
            raise invalid_request(
                f"Plugins not configured for this organisation: {', '.join(unknown)}.", param="enabled_plugin_ids"
            )
    orchestrating = not body.get("tools") and bool(gateway.catalog.eligible(organisation, plugin_ids))
    if orchestrating and (body.get("n") or 1) > 1:
        raise invalid_request("'n' greater than 1 is not supported when the gateway runs tools.", param="n")
    # Budget before limits: a refused request must not use up the key's RPM.
    await gateway.budget.check(organisation)
    limits = await check_limits(gateway, key)
    track_tokens = key.daily_tokens is not None

    if body.get("stream"):
        events = await gateway.stream(
            organisation_id=organisation.id,
            model=body["model"],
            body=body,
            plugin_ids=plugin_ids,
            request_id=request_id,
            key_id=key.id,
            track_tokens=track_tokens,
        )
        # Pull the first event before answering, so an upstream failure is a real HTTP error status.
        try:
            first: StreamEvent | None = await anext(events)
        except StopAsyncIteration:
            first = None
        return StreamingResponse(
            sse(first, events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **limits.headers()},
        )

    result = await gateway.complete(
        organisation_id=organisation.id,
        model=body["model"],
        body=body,
        plugin_ids=plugin_ids,
        request_id=request_id,
        key_id=key.id,
        track_tokens=track_tokens,
    )
    return Response(orjson.dumps(result.response), media_type="application/json", headers=limits.headers())
