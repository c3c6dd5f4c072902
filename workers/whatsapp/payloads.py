"""Meta's webhook wire format: signatures, parsing deliveries, and what each message asks of us.

Pure functions, no I/O: the route, the worker, the CLI simulator and the tests
all build and read payloads through this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from workers.whatsapp.models import (
    APP_ID_CHARS,
    MESSAGE_TYPE_CHARS,
    SENDER_CHARS,
    SENDER_NAME_CHARS,
    STATUS_CHARS,
    WAMID_CHARS,
)

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
    timestamp: int  # Unix seconds; 0 when Meta sent none (the store uses the arrival time)
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


@dataclass(frozen=True)
class RejectedEvent:
    """A message or status event that cannot be handled as it is: recorded with why, never answered."""

    kind: Literal["message", "status"]
    phone_number_id: str  # "" when the change's metadata does not say: then it cannot be routed
    event_id: str  # its wamid when usable, else a digest of the event: the dedupe key either way
    reason: str
    raw_json: str  # the event as received, as JSON any database can hold
    wa_user: str | None = None  # a message's sender, a status event's recipient, when readable
    sender_name: str | None = None
    message_type: str | None = None
    timestamp: int = 0  # 0 when unreadable


@dataclass
class Delivery:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusEvent] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)


class MalformedPayload(ValueError):
    """The body is not a JSON object: the one case where a whole delivery is refused (HTTP 400)."""


# 9999-12-31T23:59:59Z: far beyond any real message, well inside a 64-bit BIGINT.
MAX_UNIX_SECONDS = 253_402_300_799
# How deep one event may nest. Meta's are a handful of levels; orjson writes at most 254.
MAX_EVENT_DEPTH = 64
# What each message type carries under its own key; other types are not looked into.
_CONTENT_SHAPES: dict[str, type] = {
    "text": dict,
    "interactive": dict,
    "button": dict,
    "location": dict,
    "image": dict,
    "video": dict,
    "document": dict,
    "audio": dict,
    "voice": dict,
    "sticker": dict,
    "reaction": dict,
    "contacts": list,
}
_NO_PHONE_NUMBER_ID = "'metadata.phone_number_id' is missing or malformed: no app can be chosen"


def parse_delivery(body: bytes) -> Delivery:
    """Every message and status event of one webhook delivery, each read on its own.

    Raises ``MalformedPayload`` only when the body is not a JSON object (invalid
    JSON, not UTF-8, another JSON value, or nested deeper than the 1,024 levels a
    JSON parser reads). Anything wrong inside it costs only the event it is in: that
    event becomes a ``RejectedEvent`` with the reason, the others are read as usual.
    Structure that holds no events (an ``entry`` that is not a list, a change
    without a ``value`` object) is skipped. A good event's values fit their columns
    (``models``) as they are; a sender's display name, a mere detail, is cut to fit.
    """
    payload = _load_json(body)
    if not isinstance(payload, dict):
        raise MalformedPayload(f"the body is {_json_type(payload)}, not a JSON object")
    delivery = Delivery()
    for entry in _list(payload.get("entry")):
        for change in _list(_object(entry).get("changes")):
            value = _object(change).get("value")
            if not isinstance(value, dict):
                continue
            phone_number_id = _phone_number_id(value.get("metadata"))
            names = _contact_names(value.get("contacts"))
            for message in _list(value.get("messages")):
                read = _read_message(message, phone_number_id, names)
                if isinstance(read, InboundMessage):
                    delivery.messages.append(read)
                else:
                    delivery.rejected.append(read)
            for status in _list(value.get("statuses")):
                event = _read_status(status, phone_number_id)
                if isinstance(event, StatusEvent):
                    delivery.statuses.append(event)
                else:
                    delivery.rejected.append(event)
    return delivery


def _read_message(
    message: Any, phone_number_id: str, names: dict[str, str]
) -> InboundMessage | RejectedEvent:
    if not isinstance(message, dict):
        return _rejected("message", phone_number_id, message, ["the message is not a JSON object"])
    problems = [] if phone_number_id else [_NO_PHONE_NUMBER_ID]
    wamid = _identifier(message.get("id"), "id", WAMID_CHARS, problems)
    # "from" may be withheld (2026): the business-scoped user_id is the address then.
    withheld = message.get("from") in (None, "") and message.get("user_id") not in (None, "")
    sender_field = "user_id" if withheld else "from"
    sender = _identifier(message.get(sender_field), sender_field, SENDER_CHARS, problems)
    timestamp = _unix_seconds(message.get("timestamp"), problems)
    message_type = _message_type(message.get("type"), problems)
    if message_type is not None:
        _check_content(message, message_type, problems)
    if _deeper_than(message, MAX_EVENT_DEPTH):
        problems.append(f"the message is nested deeper than {MAX_EVENT_DEPTH} levels")
    sender_name = names.get(sender) if sender is not None else None
    if problems:
        return _rejected(
            "message", phone_number_id, message, problems,
            event_id=wamid, wa_user=sender, sender_name=sender_name,
            message_type=message_type, timestamp=timestamp,
        )
    assert wamid is not None and sender is not None and message_type is not None
    return InboundMessage(
        phone_number_id=phone_number_id,
        wamid=wamid,
        sender=sender,
        sender_name=sender_name,
        message_type=message_type,
        timestamp=timestamp,
        raw=message,
    )


def _read_status(status: Any, phone_number_id: str) -> StatusEvent | RejectedEvent:
    if not isinstance(status, dict):
        return _rejected("status", phone_number_id, status, ["the status event is not a JSON object"])
    problems = [] if phone_number_id else [_NO_PHONE_NUMBER_ID]
    wamid = _identifier(status.get("id"), "id", WAMID_CHARS, problems)
    state = _identifier(status.get("status"), "status", STATUS_CHARS, problems)
    timestamp = _unix_seconds(status.get("timestamp"), problems)
    if _deeper_than(status, MAX_EVENT_DEPTH):
        problems.append(f"the status event is nested deeper than {MAX_EVENT_DEPTH} levels")
    # The recipient and the error list are details: unreadable ones are dropped, not fatal.
    recipient_field = "recipient_id" if status.get("recipient_id") not in (None, "") else "recipient_user_id"
    recipient = _identifier(status.get(recipient_field), recipient_field, SENDER_CHARS, [])
    if problems:
        return _rejected(
            "status", phone_number_id, status, problems,
            event_id=wamid, wa_user=recipient, timestamp=timestamp,
        )
    assert wamid is not None and state is not None
    errors = [error for error in _list(status.get("errors")) if isinstance(error, dict)]
    return StatusEvent(
        phone_number_id=phone_number_id,
        wamid=wamid,
        status=state,
        timestamp=timestamp,
        recipient=recipient,
        errors=errors or None,
        raw=status,
    )


def _rejected(
    kind: Literal["message", "status"],
    phone_number_id: str,
    raw: Any,
    problems: list[str],
    *,
    event_id: str | None = None,
    wa_user: str | None = None,
    sender_name: str | None = None,
    message_type: str | None = None,
    timestamp: int = 0,
) -> RejectedEvent:
    raw_text = raw_json(raw)
    return RejectedEvent(
        kind=kind,
        phone_number_id=phone_number_id,
        # A redelivery of the same bytes gives the same digest: recording it again is a no-op.
        event_id=event_id or "rejected:" + hashlib.sha256(raw_text.encode()).hexdigest(),
        reason="; ".join(problems),
        raw_json=raw_text,
        wa_user=wa_user,
        sender_name=sender_name,
        message_type=message_type,
        timestamp=timestamp,
    )


def raw_json(value: Any) -> str:
    """``value`` as JSON text for a ``raw`` column; never raises (a parsed delivery is always writable)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # nested beyond what orjson writes: rejected for it
        return orjson.dumps({"plugway": f"not kept: {exc}"}).decode()


def _phone_number_id(metadata: Any) -> str:
    return _identifier(_object(metadata).get("phone_number_id"), "phone_number_id", APP_ID_CHARS, []) or ""


def _contact_names(contacts: Any) -> dict[str, str]:
    """Display names by wa_id and user_id; a malformed contact only loses its name."""
    names: dict[str, str] = {}
    for contact in _list(contacts):
        profile = _object(_object(contact).get("profile"))
        name = profile.get("name")
        if not isinstance(name, str) or not name:
            continue
        for key in ("wa_id", "user_id"):
            user = _identifier(_object(contact).get(key), key, SENDER_CHARS, [])
            if user is not None:
                names[user] = name.replace("\x00", "")[:SENDER_NAME_CHARS]
    return names


def _identifier(value: Any, name: str, max_chars: int, problems: list[str]) -> str | None:
    """A wamid, phone number or status as text, or None with the reason added to ``problems``."""
    if value is None or value == "":
        problems.append(f"'{name}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(f"'{name}' is {_json_type(value)}, not a string")
        return None
    if isinstance(value, int) and not -(10**20) < value < 10**20:
        problems.append(f"'{name}' is a number of more than 20 digits")
        return None
    text = str(value)
    if len(text) > max_chars:
        problems.append(f"'{name}' is longer than {max_chars} characters ({len(text)})")
        return None
    if "\x00" in text:
        problems.append(f"'{name}' contains a NUL character")
        return None
    return text


def _unix_seconds(value: Any, problems: list[str]) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        seconds = int(value) if len(value) <= 20 else MAX_UNIX_SECONDS + 1
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        problems.append(f"'timestamp' is not Unix seconds: {_preview(value)}")
        return 0
    if not 0 <= seconds <= MAX_UNIX_SECONDS:
        problems.append(f"'timestamp' is out of range: {_preview(value)}")
        return 0
    return seconds


def _message_type(value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return "unknown"
    if not isinstance(value, str):
        problems.append(f"'type' is {_json_type(value)}, not a string")
        return None
    if len(value) > MESSAGE_TYPE_CHARS or "\x00" in value:
        problems.append(f"'type' is not a message type: {_preview(value)}")
        return None
    return value


def _check_content(message: dict[str, Any], message_type: str, problems: list[str]) -> None:
    """The content under the type's own key, when present, has the type's shape."""
    shape = _CONTENT_SHAPES.get(message_type)
    content = message.get(message_type)
    if shape is None or content is None:
        return
    if not isinstance(content, shape):
        expected = "an object" if shape is dict else "a list"
        problems.append(f"'{message_type}' is {_json_type(content)}, not {expected}")
    elif message_type == "text" and isinstance(content, dict):
        body = content.get("body", "")
        if not isinstance(body, str):
            problems.append(f"'text.body' is {_json_type(body)}, not a string")


def _deeper_than(value: Any, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values() if isinstance(child, dict | list))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _preview(value: Any) -> str:
    """A short, printable glimpse of a scalar for a reason; containers by type only."""
    if isinstance(value, dict | list) or value is None:
        return _json_type(value)
    text = repr(value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


# --- reading JSON that orjson refuses -----------------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _load_json(body: bytes) -> Any:
    """orjson, and Python's json for what orjson refuses though the body is JSON.

    orjson refuses integers beyond 64 bits once they overflow a double, and escaped
    lone surrogates; both are valid JSON, so a delivery holding them still parses:
    such numbers become floats (infinity is written back as null), lone surrogates
    become U+FFFD (no database stores them as UTF-8).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    try:
        value = json.loads(body.decode("utf-8"), parse_int=_bounded_int, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedPayload(f"the body is not JSON: {first_error}") from None
    return _without_lone_surrogates(value)


def _bounded_int(digits: str) -> int | float:
    """Integers orjson can write back stay integers; the others become floats, as in orjson."""
    if len(digits) <= 21:  # int() of thousands of digits is slow, and limited since Python 3.11
        number = int(digits)
        if -(2**63) <= number < 2**64:
            return number
    return float(digits)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _without_lone_surrogates(value: Any) -> Any:
    """Replace lone surrogates in every string, keys included, without recursion."""

    def fixed(text: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", text)

    if isinstance(value, str):
        return fixed(value)
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            for index, child in enumerate(item):
                if isinstance(child, str):
                    item[index] = fixed(child)
                elif isinstance(child, dict | list):
                    pending.append(child)
        elif isinstance(item, dict):
            for key, child in list(item.items()):
                if isinstance(child, str):
                    child = fixed(child)
                elif isinstance(child, dict | list):
                    pending.append(child)
                if _LONE_SURROGATE.search(key):
                    del item[key]
                item[fixed(key)] = child
    return value


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
    """Turn any inbound message type into something sensible to do (never raises).

    The parser vouches only for the shape of the type's own key (``text`` is an
    object, ...): everything below it is read defensively, a wrong type counts as absent.
    """
    if not isinstance(message, dict):
        return Intent("none")
    kind = message.get("type")
    if kind == "text":
        body = _text(_object(message.get("text")).get("body")).strip()
        return Intent("model", body) if body else Intent("none")
    if kind == "interactive":
        interactive = _object(message.get("interactive"))
        reply = _object(interactive.get("button_reply")) or _object(interactive.get("list_reply"))
        title = _text(reply.get("title"))
        if title:
            description = _text(reply.get("description"))
            return Intent("model", f"{title} ({description})" if description else title)
        flow = _object(interactive.get("nfm_reply"))
        response = flow.get("response_json")  # a JSON string, as Meta sends it
        if response:
            submitted = response if isinstance(response, str) else raw_json(response)
            return Intent("model", f"[form submitted] {submitted}")
        return Intent("none")
    if kind == "button":  # quick reply on a template
        text = _text(_object(message.get("button")).get("text"))
        return Intent("model", text) if text else Intent("none")
    if kind == "location":
        loc = _object(message.get("location"))
        where = ", ".join(_text(loc.get(k)) for k in ("name", "address") if _text(loc.get(k)))
        coords = f"{_text(loc.get('latitude'))}, {_text(loc.get('longitude'))}"
        return Intent("model", f"[shared a location: {where + ' - ' if where else ''}{coords}]")
    if kind == "contacts":
        shared = []
        for contact in _dicts(message.get("contacts")):
            name = _text(_object(contact.get("name")).get("formatted_name")) or "contact"
            phones = ", ".join(_text(p.get("phone")) for p in _dicts(contact.get("phones")))
            shared.append(f"{name} {phones}".strip())
        return Intent("model", f"[shared contacts: {'; '.join(shared)}]")
    if kind in ("image", "video", "document"):
        media = _object(message.get(kind))
        caption = _text(media.get("caption")).strip()
        if caption:
            label = _text(media.get("filename")) or kind
            return Intent("model", f"[sent a {kind} ({label}) you cannot see] {caption}")
        return Intent("canned", MEDIA_ONLY_REPLY)
    if kind in ("audio", "voice"):
        return Intent("canned", MEDIA_ONLY_REPLY)
    # reaction, sticker, order, system, ephemeral, unsupported, request_welcome, ...
    return Intent("none")


def _text(value: Any) -> str:
    """A string or number as text; anything else (objects, lists, null) as nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


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
