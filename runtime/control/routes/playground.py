"""The console's playground: chat with an endpoint or a model, each tool call shown as it happens.

``POST /admin/v1/playground`` answers server-sent events, one per thing that
happened in the run (the loop's events, for a browser): ``text`` (a piece of
the answer), ``tool_call`` (name, plugin, arguments, round), ``tool_progress``,
``tool_result`` (ok, content, error, duration), then ``done`` (the answer,
usage, trace, session) or ``error`` (message, code). Requests run without a
gateway key (source ``console``), under the organisation's budget.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from runtime.api import sse
from runtime.api.deps import GatewayDep
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.control.schemas import PlaygroundRequest
from runtime.endpoints import EndpointError, EndpointService
from runtime.endpoints.pipeline import StreamedOutcome
from runtime.errors import GatewayError, UpstreamError, invalid_request
from runtime.orchestration.events import (
    Completed,
    ModelChunk,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
)
from runtime.request import DoorRules, KeepAlive, RunRequest

router = APIRouter(tags=["admin: playground"])
# No key: the organisation's budget holds; its guardrails_default are the API routes' (as before: not here).
PLAYGROUND_DOOR = DoorRules("console")
RESULT_PREVIEW_CHARS = 4000


def _event(event: Any) -> bytes | None:
    if isinstance(event, ModelChunk):
        return sse.named("text", {"delta": event.text}) if event.text else None
    if isinstance(event, ToolCallStarted):
        return sse.named("tool_call", {"call_id": event.call_id, "name": event.name, "plugin": event.plugin_id, "tool": event.tool_name, "arguments": event.arguments, "round": event.round, "builtin": event.builtin})
    if isinstance(event, ToolProgress):
        return sse.named("tool_progress", {"call_id": event.call_id, "progress": event.progress, "total": event.total, "message": event.message})
    if isinstance(event, ToolCallFinished):
        return sse.named("tool_result", {"call_id": event.call_id, "ok": event.ok, "content": event.content[:RESULT_PREVIEW_CHARS], "error": event.error, "duration_ms": round(event.duration_ms, 1)})
    if isinstance(event, KeepAlive):
        return sse.KEEP_ALIVE_COMMENT
    return None


def _done(completed: Completed, session_id: str | None) -> bytes:
    return sse.named(
        "done",
        {"content": completed.message.get("content") or "", "finish_reason": completed.finish_reason, "usage": completed.usage, "trace": completed.trace, "session_id": session_id},
    )


@router.post("/admin/v1/playground")
async def playground(body: PlaygroundRequest, request: Request, gateway: GatewayDep, admin: AdminDep) -> StreamingResponse:
    request_id = f"console-{uuid.uuid4().hex[:16]}"
    if body.endpoint is not None:
        service: EndpointService = request.app.state.endpoints
        # No "stream": the run's events are read here whatever the endpoint lets its callers do,
        # so an endpoint with `stream: false` can be tried too.
        payload: dict[str, Any] = {"messages": body.messages, "variables": body.variables or {}}
        if body.session_id:
            payload["session_id"] = body.session_id
        try:
            prepared = await service.prepare(key=None, organisation_id=body.organisation, slug=body.endpoint, body=payload, request_id=request_id, source="console")
        except EndpointError as exc:
            raise GatewayError(exc.status, exc.message, code=exc.code, headers=exc.headers) from None

        async def from_endpoint() -> AsyncIterator[bytes]:
            completed: Completed | None = None
            try:
                async for event in service.events(prepared):
                    if isinstance(event, Completed):
                        completed = event
                    elif isinstance(event, StreamedOutcome):
                        if completed is not None:
                            yield _done(completed, event.session_id)
                    elif (chunk := _event(event)) is not None:
                        yield chunk
            except EndpointError as exc:
                yield sse.named("error", {"message": exc.message, "code": exc.code})

        target = f"{body.organisation}/{body.endpoint}"
        events = from_endpoint()
    else:
        if not body.model:
            raise invalid_request("Give an endpoint or a model.", param="model")
        ctx = await gateway.admit(PLAYGROUND_DOOR, key=None, organisation_id=body.organisation, request_id=request_id, model=body.model, plugins=None)

        async def from_model() -> AsyncIterator[bytes]:
            try:
                async for event in gateway.stream(ctx, RunRequest({"model": body.model, "messages": body.messages}, stream=True)):
                    if isinstance(event, Completed):
                        yield _done(event, None)
                    elif (chunk := _event(event)) is not None:
                        yield chunk
            except GatewayError as exc:
                yield sse.named("error", {"message": exc.message, "code": exc.code})
            except UpstreamError as exc:
                yield sse.named("error", {"message": exc.message, "code": "upstream_unavailable"})

        target = f"{body.organisation}/{body.model}"
        events = from_model()
    await audit(request, admin, "playground.chat", target)
    return sse.response(events)
