"""Meta's webhook for the WhatsApp Cloud API: the verification handshake and inbound events.

The POST handler reads at most ``max_body_bytes`` (an oversized ``Content-Length`` is
refused before a byte is read, and a body without one is never read past the cap),
authenticates the raw bytes (``X-Hub-Signature-256``), stores every message and
status event of the delivery, and answers 200 at once: the model is never called
here, the reply worker does that from the stored queue.

Each event is read and stored on its own. A malformed message or status event (a
field of the wrong type, a timestamp that is not Unix seconds, an id longer than
its column, ...) is recorded with status ``rejected`` and the reason, and is never
answered; the rest of the delivery is stored as usual. Every signed JSON object is
answered 200, so Meta never redelivers a delivery for what is inside it::

    {"status": "ok", "stored", "duplicates", "stale", "ignored", "statuses", "unrouted",
     "rejected", "rejections": [{"kind": "message"|"status", "id", "reason"}], "elapsed_ms"}

``rejected`` counts the malformed events of this delivery (``rejections`` lists the
first 20); one whose ``metadata.phone_number_id`` is unreadable belongs to no app
and is only logged. ``unrouted`` counts well-formed events for phone numbers that
no app signed by this secret owns.

Errors: every other answer carries the gateway's error envelope,
``{"error": {"message", "type", "param", "code"}}`` (``param`` is always null here),
checked in this order:

| HTTP | code                  | type                    | when                                     |
| ---- | --------------------- | ----------------------- | ---------------------------------------- |
| 413  | `request_too_large`   | `invalid_request_error` | the body is over `max_body_bytes`        |
| 401  | `missing_signature`   | `authentication_error`  | no `X-Hub-Signature-256` header          |
| 403  | `invalid_signature`   | `authentication_error`  | the signature matches no app's secret    |
| 400  | `invalid_payload`     | `invalid_request_error` | the body is not a JSON object (or nests  |
|      |                       |                         | deeper than 1,024 levels)                |
| 403  | `verification_failed` | `authentication_error`  | GET: wrong `hub.mode` or verify token    |
| 500  | `internal_error`      | `api_error`             | the database failed: Meta retries later  |
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from runtime.api.body import read_body
from runtime.api.errors import error_response
from runtime.config import Settings, WhatsAppAppConfig
from runtime.errors import GatewayError
from runtime.telemetry import current as telemetry
from workers.whatsapp.payloads import (
    SIGNATURE_HEADER,
    InboundMessage,
    MalformedPayload,
    RejectedEvent,
    StatusEvent,
    parse_delivery,
    signature_matches,
)
from workers.whatsapp.store import InboundStore, StoredDelivery

log = logging.getLogger("plugway.whatsapp")

router = APIRouter(tags=["whatsapp"])

MAX_LISTED_REJECTIONS = 20


def _settings(request: Request) -> Settings:
    return request.app.state.gateway.settings  # type: ignore[no-any-return]


@router.get("/webhooks/whatsapp")
async def verify_webhook(request: Request) -> Response:
    params = request.query_params
    token = params.get("hub.verify_token") or ""
    challenge = params.get("hub.challenge") or ""
    apps = _settings(request).whatsapp.apps
    token_ok = False
    for app in apps:  # compare against every app, in constant time, without stopping early
        token_ok |= hmac.compare_digest(app.verify_token.encode(), token.encode())
    if params.get("hub.mode") != "subscribe" or not token_ok:
        return _refuse(403, "verification failed", code="verification_failed", type="authentication_error")
    return PlainTextResponse(challenge, status_code=200)


@router.post("/webhooks/whatsapp")
async def receive_webhook(request: Request) -> Response:
    started = time.perf_counter()
    gateway = request.app.state.gateway
    settings: Settings = gateway.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
    except GatewayError as exc:  # 413, already in the envelope this webhook documents
        return error_response(exc)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return _refuse(401, f"missing {SIGNATURE_HEADER}", code="missing_signature", type="authentication_error")
    # Authenticate before parsing: the secret that signed the bytes decides which apps
    # this delivery may speak for.
    signed_by = _apps_signed_by(settings.whatsapp.apps, body, signature)
    if not signed_by:
        log.warning("whatsapp webhook refused: signature matches no configured app")
        return _refuse(403, "invalid signature", code="invalid_signature", type="authentication_error")
    try:
        delivery = parse_delivery(body)
    except MalformedPayload as exc:
        return _refuse(400, str(exc), code="invalid_payload", type="invalid_request_error")

    by_number = {app.phone_number_id: app for app in signed_by}
    messages: list[tuple[WhatsAppAppConfig, InboundMessage]] = []
    statuses: list[tuple[WhatsAppAppConfig, StatusEvent]] = []
    rejected: list[tuple[WhatsAppAppConfig, RejectedEvent]] = []
    unrouted: list[str] = []
    for message in delivery.messages:
        if app := by_number.get(message.phone_number_id):
            messages.append((app, message))
        else:
            unrouted.append(message.phone_number_id)
    for status in delivery.statuses:
        if app := by_number.get(status.phone_number_id):
            statuses.append((app, status))
        else:
            unrouted.append(status.phone_number_id)
    for event in delivery.rejected:
        if app := by_number.get(event.phone_number_id):
            rejected.append((app, event))
    if unrouted:
        log.warning(
            "whatsapp webhook: %d events for phone numbers with no app here: %s",
            len(unrouted), ", ".join(sorted(set(unrouted))[:10]),
        )
    if delivery.rejected:
        log.warning(
            "whatsapp webhook: %d malformed events rejected (%d recorded): %s",
            len(delivery.rejected), len(rejected),
            "; ".join(f"{e.kind} {e.event_id[:80]}: {e.reason}" for e in delivery.rejected[:5]),
        )

    # The worker's processing continues this request's trace (see runtime.telemetry.tracing).
    telemetry().stamp_queued(message.raw for _, message in messages)
    store = InboundStore(gateway.engine)
    max_age_s = settings.whatsapp.max_message_age_s
    stored: StoredDelivery = await anyio.to_thread.run_sync(
        lambda: store.store_delivery(messages, statuses, rejected, max_age_s=max_age_s)
    )
    # A database error above propagates as a 500: Meta keeps the delivery and retries it.
    telemetry().webhook_events(
        {
            "stored": stored.stored, "duplicate": stored.duplicates, "stale": stored.stale, "ignored": stored.ignored,
            "status": stored.statuses, "rejected": len(delivery.rejected), "unrouted": len(unrouted),
        }
    )
    worker = getattr(request.app.state, "whatsapp_worker", None)
    if worker is not None and stored.stored:
        worker.notify()
    result: dict[str, Any] = {
        "status": "ok",
        "stored": stored.stored,
        "duplicates": stored.duplicates,
        "stale": stored.stale,
        "ignored": stored.ignored,
        "statuses": stored.statuses,
        "unrouted": len(unrouted),
        "rejected": len(delivery.rejected),
        "rejections": [
            {"kind": event.kind, "id": event.event_id, "reason": event.reason}
            for event in delivery.rejected[:MAX_LISTED_REJECTIONS]
        ],
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return JSONResponse(result)


def _apps_signed_by(
    apps: list[WhatsAppAppConfig], body: bytes, signature: str
) -> list[WhatsAppAppConfig]:
    """The apps whose secret produced ``signature`` (apps of one Meta app share a secret)."""
    matches: dict[str, bool] = {}
    for app in apps:
        if app.app_secret not in matches:
            matches[app.app_secret] = signature_matches(app.app_secret, body, signature)
    return [app for app in apps if matches[app.app_secret]]


def _refuse(status: int, message: str, *, code: str, type: str) -> Response:
    return error_response(GatewayError(status, message, code=code, type=type))
