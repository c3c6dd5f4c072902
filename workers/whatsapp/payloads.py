"""Meta's webhook wire format: signatures, parsing deliveries, and what each message asks of us.

Pure functions, no I/O: the route, the worker, the CLI simulator and the tests
all build and read payloads through this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_matches(app_secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of the header against the HMAC of the raw bytes received."""
    if not header:
        return False
    return hmac.compare_digest(sign(app_secret, body).encode(), header.strip().encode())


@dataclass(frozen=True)
class InboundMessage:
    phone_number_id: str
    wamid: str
    sender: str  # where replies go: wa_id, or the business-scoped user_id
    sender_name: str | None
    message_type: str
    timestamp: int
    raw: dict[str, Any]


@dataclass(frozen=True)
class StatusEvent:
    phone_number_id: str
    wamid: str
    status: str
    timestamp: int
    recipient: str | None
    errors: list[dict[str, Any]] | None
    raw: dict[str, Any]


@dataclass
class Delivery:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusEvent] = field(default_factory=list)


class MalformedPayload(ValueError):
    pass


def parse_delivery(body: bytes) -> Delivery:
    """Every entry, change, message and status of one webhook delivery."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise MalformedPayload("expected an object with an 'entry' list")
    delivery = Delivery()
    for entry in payload["entry"]:
        for change in _dicts((entry or {}).get("changes") if isinstance(entry, dict) else None):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            phone_number_id = str((value.get("metadata") or {}).get("phone_number_id") or "")
            names = {
                str(c.get("wa_id") or c.get("user_id") or ""): (c.get("profile") or {}).get("name")
                for c in _dicts(value.get("contacts"))
            }
            for message in _dicts(value.get("messages")):
                wamid = message.get("id")
                sender = message.get("from") or message.get("user_id")
                if not wamid or not sender:
                    continue
                delivery.messages.append(
                    InboundMessage(
                        phone_number_id=phone_number_id,
                        wamid=str(wamid),
                        sender=str(sender),
                        sender_name=names.get(str(sender)),
                        message_type=str(message.get("type") or "unknown"),
                        timestamp=_int(message.get("timestamp")),
                        raw=message,
                    )
                )
            for status in _dicts(value.get("statuses")):
                if not status.get("id") or not status.get("status"):
                    continue
                errors = status.get("errors")
                delivery.statuses.append(
                    StatusEvent(
                        phone_number_id=phone_number_id,
                        wamid=str(status["id"]),
                        status=str(status["status"]),
                        timestamp=_int(status.get("timestamp")),
                        recipient=status.get("recipient_id") or status.get("recipient_user_id"),
                        errors=errors if isinstance(errors, list) else None,
                        raw=status,
                    )
                )
    return delivery


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- what a message asks of us ---------------------------------------------

MEDIA_ONLY_REPLY = (
    "Thanks! I can only read text messages for now. "
    "Could you tell me in words what you need?"
)


@dataclass(frozen=True)
class Intent:
    """``model``: answer ``text`` with the runtime; ``canned``: send ``text`` as is; ``none``."""

    action: Literal["model", "canned", "none"]
    text: str | None = None


def intent_for(message: dict[str, Any]) -> Intent:
    """Turn any inbound message type into something sensible to do (never raises)."""
    kind = message.get("type")
    if kind == "text":
        body = str((message.get("text") or {}).get("body") or "").strip()
        return Intent("model", body) if body else Intent("none")
    if kind == "interactive":
        interactive = message.get("interactive") or {}
        reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
        title = reply.get("title")
        if title:
            description = reply.get("description")
            return Intent("model", f"{title} ({description})" if description else str(title))
        flow = interactive.get("nfm_reply") or {}
        if flow.get("response_json"):
            return Intent("model", f"[form submitted] {flow['response_json']}")
        return Intent("none")
    if kind == "button":  # quick reply on a template
        text = (message.get("button") or {}).get("text")
        return Intent("model", str(text)) if text else Intent("none")
    if kind == "location":
        loc = message.get("location") or {}
        where = ", ".join(str(loc[k]) for k in ("name", "address") if loc.get(k))
        coords = f"{loc.get('latitude')}, {loc.get('longitude')}"
        return Intent("model", f"[shared a location: {where + ' - ' if where else ''}{coords}]")
    if kind == "contacts":
        shared = []
        for contact in _dicts(message.get("contacts")):
            name = (contact.get("name") or {}).get("formatted_name") or "contact"
            phones = ", ".join(str(p.get("phone")) for p in _dicts(contact.get("phones")))
            shared.append(f"{name} {phones}".strip())
        return Intent("model", f"[shared contacts: {'; '.join(shared)}]")
    if kind in ("image", "video", "document"):
        media = message.get(kind) or {}
        caption = str(media.get("caption") or "").strip()
        if caption:
            label = media.get("filename") or kind
            return Intent("model", f"[sent a {kind} ({label}) you cannot see] {caption}")
        return Intent("canned", MEDIA_ONLY_REPLY)
    if kind in ("audio", "voice"):
        return Intent("canned", MEDIA_ONLY_REPLY)
    # reaction, sticker, order, system, ephemeral, unsupported, request_welcome, ...
    return Intent("none")


# --- building deliveries (the simulator and the tests) ----------------------


def new_wamid() -> str:
    return "wamid.HBgL" + secrets.token_urlsafe(24).replace("-", "A").replace("_", "B")


def text_message(
    sender: str, text: str, *, wamid: str | None = None, timestamp: int | None = None
) -> dict[str, Any]:
    """One ``messages[]`` element, as in Meta's documented text message example."""
    return {
        "from": sender,
        "id": wamid or new_wamid(),
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "text": {"body": text},
        "type": "text",
    }


def change(
    phone_number_id: str,
    *,
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    display_phone_number: str = "15550783881",
    contact_name: str = "Kerry Fisher",
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    if messages:
        senders = dict.fromkeys(m["from"] for m in messages)
        value["contacts"] = [{"profile": {"name": contact_name}, "wa_id": s} for s in senders]
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {"value": value, "field": "messages"}


def delivery(*changes: dict[str, Any], waba_id: str = "102290129340398") -> dict[str, Any]:
    """A whole webhook body; several changes go in one entry (see ``delivery_entries``)."""
    return {"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": list(changes)}]}


def delivery_entries(*entries: list[dict[str, Any]], waba_id: str = "102290129340398") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": changes} for changes in entries],
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise like Meta does: compact JSON with non-ASCII escaped as \\uXXXX."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
