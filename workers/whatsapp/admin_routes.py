"""WhatsApp: conversations (messages in and out, with the tool calls made), dead letters, requeue."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from runtime.api.deps import GatewayDep
from runtime.control import pagination
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.errors import GatewayError
from workers.whatsapp.store import ConversationView

router = APIRouter(tags=["admin: whatsapp"])


def _offset(cursor: str | None) -> int:
    position = pagination.decode(cursor)
    return int(position) if position is not None else 0


@router.get("/admin/v1/whatsapp/conversations")
async def conversations(
    gateway: GatewayDep,
    admin: AdminDep,
    app: str | None = None,
    limit: int = Query(default=pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    offset = _offset(cursor)
    rows = await anyio.to_thread.run_sync(partial(ConversationView(gateway.engine).conversations, app_id=app, offset=offset, limit=limit + 1))
    return pagination.page(rows, limit, lambda _row: offset + limit)


@router.get("/admin/v1/whatsapp/conversations/{conversation:path}/messages")
async def conversation_messages(conversation: str, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    rows = await anyio.to_thread.run_sync(partial(ConversationView(gateway.engine).messages, conversation))
    if not rows:
        raise GatewayError(404, f"No conversation '{conversation}'.", code="not_found", type="invalid_request_error")
    return {"data": rows, "next_cursor": None}


@router.get("/admin/v1/whatsapp/dead-letters")
async def dead_letters(
    gateway: GatewayDep,
    admin: AdminDep,
    limit: int = Query(default=pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    offset = _offset(cursor)
    rows = await anyio.to_thread.run_sync(partial(ConversationView(gateway.engine).dead_letters, offset=offset, limit=limit + 1))
    return pagination.page(rows, limit, lambda _row: offset + limit)


@router.post("/admin/v1/whatsapp/dead-letters/{message_id}/requeue")
async def requeue(message_id: int, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    moved = await anyio.to_thread.run_sync(ConversationView(gateway.engine).requeue, message_id)
    if not moved:
        raise GatewayError(409, f"Message {message_id} is not a dead letter that can be requeued (already requeued, answered, or rejected as malformed).", code="conflict", type="invalid_request_error")
    worker = getattr(request.app.state, "whatsapp_worker", None)
    if worker is not None:
        worker.notify()
    await audit(request, admin, "whatsapp.requeue", str(message_id))
    return {"id": message_id, "requeued": True}
