"""POST /v1/responses, GET and DELETE /v1/responses/{id}, its input items and cancel: OpenAI's Responses API on the one runtime.

For a model whose upstream speaks the Responses API (``api: responses``) the client's
request goes on as it is (see :mod:`runtime.providers.openai_responses`); for any other
the fields the chat shape cannot carry are ignored and named, or refused.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from functools import partial

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from runtime.api import sse
from runtime.api.body import read_json
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.disconnect import run_until_disconnected
from runtime.api.openapi import documented_body
from runtime.errors import GatewayError, UpstreamError
from runtime.frontdoors.carry import settle, unsupported_params_policy
from runtime.frontdoors.responses import store
from runtime.frontdoors.responses.encoder import ResponsesEncoder
from runtime.frontdoors.responses.schema import CreateResponseRequest
from runtime.frontdoors.responses.translate import (
    ENCRYPTED_REASONING,
    check_server_urls,
    parse_request,
)
from runtime.gateway import Gateway, requested_model
from runtime.json_types import JSON
from runtime.orchestration.events import Completed, Event, ToolProgress, ToolsOffered
from runtime.providers.openai_responses import RESPONSES_NATIVE
from runtime.reasoning import REASONING_PARTS
from runtime.request import DoorRules, KeepAlive, RequestContext, RunRequest

router = APIRouter(tags=["responses"])
# OpenAI-compatible, and the one door that can stop a run for a person's approval.
RESPONSES_DOOR = DoorRules("responses", guardrails_default=True, can_ask_approval=True)


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        404, f"Response with id '{response_id}' not found.", code="not_found", type="invalid_request_error", param=param
    )


def _encode(events: list[JSON]) -> bytes:
    return b"".join(sse.named(event["type"], event) for event in events)


_savers: weakref.WeakKeyDictionary[Gateway, store.ResponseSaver] = weakref.WeakKeyDictionary()


def _saver(gateway: Gateway) -> store.ResponseSaver:
    saver = _savers.get(gateway)
    if saver is None:
        saver = _savers[gateway] = store.ResponseSaver(gateway.engine)
    return saver


async def _save(gateway: Gateway, ctx: RequestContext, encoder: ResponsesEncoder, completed: Completed | None) -> None:
    await _saver(gateway).save(
        store.row_for(
            response=encoder.response,
            organisation_id=ctx.organisation.id,
            state=encoder.state(completed),
            retention_days=gateway.settings.responses.retention_days,
        )
    )


async def _stream(
    gateway: Gateway,
    ctx: RequestContext,
    encoder: ResponsesEncoder,
    head: bytes,
    events: AsyncIterator[Event | KeepAlive],
    keep: bool,
) -> AsyncIterator[bytes]:
    completed: Completed | None = None
    try:
        yield head
        async for event in events:
            if isinstance(event, KeepAlive):
                yield sse.KEEP_ALIVE_COMMENT
                continue
            if isinstance(event, ToolProgress):
                yield sse.tool_progress(encoder.progress(event))
                continue
            if isinstance(event, Completed):
                completed = event
            out = encoder.encode(event)
            if out:
                yield _encode(out)
    except GatewayError as exc:
        yield _encode(encoder.failed(exc.code, exc.message, exc.param))
    except UpstreamError as exc:
        yield _encode(encoder.failed("upstream_unavailable", exc.message))
    if keep and completed is not None:
        await _save(gateway, ctx, encoder, completed)


@router.post("/v1/responses", openapi_extra=documented_body(CreateResponseRequest))
async def create_response(request: Request, gateway: GatewayDep, key: KeyDep, request_id: RequestIdDep) -> Response:
    body = await read_json(request, gateway.settings.max_body_bytes)
    parsed = parse_request(body)
    previous = None
    if parsed.previous_response_id is not None:
        previous = await anyio.to_thread.run_sync(
            partial(store.load, gateway.engine, organisation_id=key.organisation_id, response_id=parsed.previous_response_id)
        )
        if previous is None:
            raise not_found(parsed.previous_response_id, "previous_response_id")

    ignored_headers: dict[str, str] = {}
    native: list[bool] = []

    def check(ctx: RequestContext) -> None:
        check_server_urls(body.get("tools"), ctx.organisation)
        if gateway.router.speaks_natively(ctx.model, "responses"):
            # The client's own request reaches the upstream: nothing but dropped content parts is lost.
            native.append(True)
            parsed.body[RESPONSES_NATIVE] = {"fields": parsed.native_fields, "tools": parsed.native_tools}
            policy = unsupported_params_policy(gateway.settings, ctx.organisation, ctx.model)
            # Anthropic's thinking, carried in reasoning items, does not go to an OpenAI upstream.
            ignored_headers.update(settle(parsed.lost + parsed.carried_anthropic, policy, request_id=ctx.request_id))
            return
        anthropic = gateway.router.speaks_natively(ctx.model, "messages")
        # Anthropic's thinking, carried in reasoning items, goes back only to an Anthropic model.
        ignored = list(parsed.ignored) + parsed.lost + ([] if anthropic else parsed.carried_anthropic)
        if anthropic:
            # Its thinking is the summary, and goes back and forth as encrypted content.
            honoured = {"reasoning.summary", *(f"include[{i}]" for i, entry in enumerate(body.get("include") or ()) if entry == ENCRYPTED_REASONING)}
            ignored = [name for name in ignored if name not in honoured]
        if parsed.reasoning_effort is not None:
            if anthropic or gateway.router.speaks_natively(ctx.model, "chat"):
                # An Anthropic model thinks with a budget for the effort; its signed blocks go to
                # the client inside reasoning items' encrypted_content and come back (runtime.reasoning).
                parsed.body["reasoning_effort"] = parsed.reasoning_effort
                if "reasoning_effort" in gateway.router.ignored_chat_params(ctx.model, parsed.body):
                    ignored.append("reasoning.effort")
            else:
                ignored.append("reasoning.effort")
        policy = unsupported_params_policy(gateway.settings, ctx.organisation, ctx.model)
        ignored_headers.update(settle(ignored, policy, request_id=ctx.request_id))

    # Checked before admission: an approval naming no pending request spends nothing, holds nothing.
    resume = parsed.resume(previous.state.get("pending") if previous else None)
    ctx = await gateway.admit(
        RESPONSES_DOOR,
        key=key,
        request_id=request_id,
        model=parsed.model,
        plugins=parsed.plugins,
        server_tools=parsed.server_tools,
        check=check,
        body=body,
        prompt_parts=(previous.state.get("messages") or [],) if previous else (),
    )
    history = list(previous.state.get("messages") or []) if previous else []
    messages = history + parsed.input_messages
    if not native:
        # Native items alone (reasoning a chat upstream cannot take back) make no chat turn.
        messages = [m for m in messages if not _native_only(m)]
    run = RunRequest({**parsed.body, "messages": messages}, stream=parsed.stream, resume=resume)
    encoder = ResponsesEncoder(
        model_id=requested_model(ctx),
        echo=parsed.echo,
        listed=set(previous.state.get("listed") or ()) if previous else None,
        namespaced=parsed.namespaced,
        include_encrypted=parsed.include_encrypted,
        input_items=parsed.input_items,
        customs=parsed.customs,
    )
    headers = {**ctx.limits.headers(), **ignored_headers}

    if run.stream:
        events = gateway.stream(ctx, run)
        start = _encode(encoder.start())
        # Read until the first bytes for the client, so that an upstream failure is a real HTTP status.
        head = start
        async for event in events:
            if isinstance(event, KeepAlive):
                head += sse.KEEP_ALIVE_COMMENT
                break
            head += _encode(encoder.encode(event))
            if not isinstance(event, ToolsOffered):
                break
        return sse.response(_stream(gateway, ctx, encoder, head, events, parsed.store), headers)

    work = gateway.run(ctx, run)
    result = await (run_until_disconnected(request, work) if ctx.plugins else work)
    for event in result.events:
        encoder.encode(event)
    if parsed.store:
        await _save(gateway, ctx, encoder, result.completed)
    return Response(orjson.dumps(encoder.response), media_type="application/json", headers=headers)


def _native_only(message: JSON) -> bool:
    return message.get("role") == "assistant" and not message.get("content") and not message.get("tool_calls") and bool(message.get(REASONING_PARTS))


async def _load(gateway: Gateway, organisation_id: str, response_id: str) -> store.Saved:
    saved = await anyio.to_thread.run_sync(partial(store.load, gateway.engine, organisation_id=organisation_id, response_id=response_id))
    if saved is None:
        raise not_found(response_id)
    return saved


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, gateway: GatewayDep, key: KeyDep) -> Response:
    saved = await _load(gateway, key.organisation_id, response_id)
    return Response(orjson.dumps(saved.response), media_type="application/json")


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, gateway: GatewayDep, key: KeyDep, limit: int = 20, order: str = "desc", after: str | None = None
) -> Response:
    """The request's own input items (OpenAI's cursor page: ``limit`` 1–100, ``order`` asc or desc, ``after`` an item id)."""
    if not 1 <= limit <= 100:
        raise GatewayError(400, "'limit' must be from 1 to 100.", code="invalid_value", type="invalid_request_error", param="limit")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "'order' must be 'asc' or 'desc'.", code="invalid_value", type="invalid_request_error", param="order")
    saved = await _load(gateway, key.organisation_id, response_id)
    items = list(saved.state.get("input_items") or [])
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise GatewayError(400, f"No input item '{after}' in this response.", code="invalid_value", type="invalid_request_error", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    listing = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return Response(orjson.dumps(listing), media_type="application/json")


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, gateway: GatewayDep, key: KeyDep) -> Response:
    """Only a background response can be cancelled; plugway has none (``background`` is refused),
    so a stored response has always finished: like OpenAI, that is a 400, an unknown id a 404."""
    await _load(gateway, key.organisation_id, response_id)
    raise GatewayError(
        400,
        "Only responses created with background=true can be cancelled; this response has already finished.",
        code="invalid_request",
        type="invalid_request_error",
        param="response_id",
    )


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, gateway: GatewayDep, key: KeyDep) -> Response:
    removed = await anyio.to_thread.run_sync(
        partial(store.remove, gateway.engine, organisation_id=key.organisation_id, response_id=response_id)
    )
    if not removed:
        raise not_found(response_id)
    return Response(orjson.dumps({"id": response_id, "object": "response.deleted", "deleted": True}), media_type="application/json")
