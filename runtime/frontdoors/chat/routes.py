"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from runtime.api import sse
from runtime.api.body import read_json
from runtime.api.deps import GatewayDep, KeyDep, RequestIdDep
from runtime.api.disconnect import run_until_disconnected
from runtime.api.middleware import use_request_id
from runtime.api.openapi import documented_body
from runtime.errors import GatewayError, UpstreamError
from runtime.frontdoors.carry import admitted_headers
from runtime.frontdoors.chat.encoder import (
    ChatStreamEncoder,
    ChoicesStreamEncoder,
    chat_completion,
    summed_usage,
)
from runtime.frontdoors.chat.schema import ChatCompletionRequest
from runtime.frontdoors.chat.validation import validate_chat_request
from runtime.gateway import Gateway, requested_model
from runtime.json_types import JSON
from runtime.orchestration.events import Event
from runtime.request import DoorRules, KeepAlive, PluginRequest, RequestContext, RunRequest

router = APIRouter()
# OpenAI-compatible: the organisation's guardrails_default apply.
CHAT_DOOR = DoorRules("api", guardrails_default=True)


async def _run_choices(gateway: Gateway, ctx: RequestContext, run: RunRequest, n: int) -> JSON:
    """``n`` > 1 with server-side tools: ``n`` independent loops, one choice each, usage summed.

    A provider's own ``n`` would share one set of tool calls between the choices; each
    loop asks for one choice instead. Each run records its own usage (billed and
    limited like any run); the answer's ``usage`` is their sum and ``plugway`` holds
    every choice's trace under ``choices``.
    """
    single = RunRequest({**run.body, "n": 1}, stream=False, mode=run.mode)
    results = await asyncio.gather(*(gateway.run(ctx, single) for _ in range(n)))
    answers = [chat_completion(result, requested_model(ctx)) for result in results]
    merged = answers[0]
    merged["choices"] = [{**answer["choices"][0], "index": index} for index, answer in enumerate(answers)]
    merged["usage"] = summed_usage([answer["usage"] for answer in answers])
    merged["plugway"] = {**answers[0]["plugway"], "choices": [answer["plugway"] for answer in answers]}
    return merged


async def _stream_choices(
    gateway: Gateway, ctx: RequestContext, run: RunRequest, n: int
) -> AsyncGenerator[tuple[int, Event | KeepAlive], None]:
    """The streamed counterpart of :func:`_run_choices`: ``n`` runs' events, tagged with their
    choice, as they come. A run that fails ends the stream (and cancels the others)."""
    single = RunRequest({**run.body, "n": 1}, stream=True, mode=run.mode)
    queue: asyncio.Queue[tuple[int, Event | KeepAlive | Exception | None]] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for event in gateway.stream(ctx, single):
                await queue.put((index, event))
        except Exception as exc:
            await queue.put((index, exc))
            return
        await queue.put((index, None))

    runs = [asyncio.create_task(pump(index)) for index in range(n)]
    try:
        running = n
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def _encoded_choices(
    tagged: AsyncGenerator[tuple[int, Event | KeepAlive], None], encoder: ChoicesStreamEncoder
) -> AsyncIterator[bytes | None]:
    try:
        async for index, event in tagged:
            yield encoder.encode(index, event)
    finally:
        await tagged.aclose()  # a client that left cancels every run


async def sse_stream(head: bytes, chunks: AsyncIterator[bytes | None]) -> AsyncIterator[bytes]:
    try:
        yield head
        async for chunk in chunks:
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
    body = await read_json(request, gateway.settings.max_body_bytes)
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
        body=body,
    )
    run = RunRequest(body, stream=bool(body.get("stream")), mode=body.get("orchestration_mode"))
    choices = body.get("n") or 1
    # What the model's upstream cannot honour is dropped and named (n > 1 with plugins is run here, n times).
    ignored = [name for name in gateway.router.ignored_chat_params(ctx.model, body) if not (name == "n" and ctx.plugins)]
    headers = admitted_headers(gateway, ctx, ignored)

    if run.stream and ctx.plugins and choices > 1:
        choices_encoder = ChoicesStreamEncoder(
            model_id=requested_model(ctx),
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            choices=choices,
        )
        tagged = _stream_choices(gateway, ctx, run, choices)
        first = await sse.first_bytes(tagged, lambda tagged_event: choices_encoder.encode(*tagged_event))
        return sse.response(sse_stream(first, _encoded_choices(tagged, choices_encoder)), headers)

    if run.stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        encoder = ChatStreamEncoder(model_id=requested_model(ctx), include_usage=include_usage)
        events = gateway.stream(ctx, run)
        head = await sse.first_bytes(events, encoder.encode)
        return sse.response(sse_stream(head, (encoder.encode(event) async for event in events)), headers)

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
