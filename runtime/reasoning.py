"""Reasoning state, carried losslessly through plugway's chat-completions lingua franca.

plugway's internal turn is the chat-completions message, which has no place for the state a
reasoning model needs echoed back on the next round: OpenAI's reasoning items (``id``,
``summary``, ``encrypted_content``) and Anthropic's ``thinking`` / ``redacted_thinking`` blocks
with their signatures. That state rides on the message under :data:`REASONING_PARTS`, verbatim,
in the order the model produced it, each part tagged with the protocol it came from::

    {"role": "assistant", "content": None, "tool_calls": [...],
     "reasoning_parts": [
         {"protocol": "openai-responses", "part": {"type": "reasoning", "id": "rs_1", "summary": [],
                                                    "encrypted_content": "..."}},
         {"protocol": "anthropic", "part": {"type": "thinking", "thinking": "...", "signature": "..."}},
     ]}

A streamed chunk's ``delta`` carries complete parts the same way (an adapter emits a part once
it has all of it); :class:`runtime.providers.streaming.StreamAccumulator` collects them.

Each adapter re-emits the parts of its own protocol and drops the rest
(:func:`parts_for_model`), and an adapter speaking plain chat completions upstream removes the
key (:func:`without_parts`): the key never reaches a wire that does not know it. A front door
shows a client the parts as they are (:func:`parts_of`), or, for a client of the other
protocol, inside an opaque field it echoes back (*carried across protocols*, below); output
guardrails may seal a part whose text they redact (:func:`shown`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

import orjson

REASONING_PARTS: Final = "reasoning_parts"

Protocol = Literal["openai-responses", "anthropic"]
OPENAI_RESPONSES: Final[Protocol] = "openai-responses"
ANTHROPIC: Final[Protocol] = "anthropic"


def tagged(protocol: Protocol, parts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native parts tagged with their protocol, ready for :data:`REASONING_PARTS`."""
    return [{"protocol": protocol, "part": part} for part in parts]


def parts_of(message: dict[str, Any], protocol: Protocol) -> list[dict[str, Any]]:
    """The native parts of ``protocol`` on a message (or a delta), in order; others are dropped."""
    return [
        entry["part"]
        for entry in message.get(REASONING_PARTS) or ()
        if isinstance(entry, dict) and entry.get("protocol") == protocol and isinstance(entry.get("part"), dict)
    ]


def without_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without reasoning state, for a wire that cannot carry it (copies only those that had it)."""
    if not any(REASONING_PARTS in message for message in messages):
        return messages
    return [
        {key: value for key, value in message.items() if key != REASONING_PARTS} if REASONING_PARTS in message else message
        for message in messages
    ]


# -- carried across protocols ------------------------------------------------------------------
#
# A client keeps the conversation in its own protocol, and echoes back only what that protocol
# has a place for. When the model behind the door speaks the other protocol, its reasoning state
# rides inside the one opaque field the client's protocol always echoes unread: a Responses
# reasoning item's ``encrypted_content`` (for Anthropic's signed blocks, to a Responses client
# such as Codex), an Anthropic thinking block's ``signature`` or a ``redacted_thinking`` block's
# ``data`` (for OpenAI's reasoning items, to a Messages client such as Claude Code). The value is
# ``plugway.<protocol>.`` and the part as base64url JSON. Nothing is signed by plugway: the part
# inside carries its provider's own signature or encryption, checked by that provider, and a
# client can send either protocol's parts natively anyway.

CARRIER_PREFIX: Final = "plugway."
_PROTOCOLS: Final[tuple[Protocol, ...]] = (OPENAI_RESPONSES, ANTHROPIC)


class MalformedCarrier(ValueError):
    """An opaque field that claims to carry plugway's reasoning state but does not decode."""


def carry(protocol: Protocol, part: dict[str, Any]) -> str:
    """A native part as the opaque string a client of the other protocol echoes back."""
    return f"{CARRIER_PREFIX}{protocol}.{base64.urlsafe_b64encode(orjson.dumps(part)).decode()}"


def carried(value: Any) -> tuple[Protocol, dict[str, Any]] | None:
    """The (protocol, part) an opaque string carries, or None for a provider's own value.

    Raises :class:`MalformedCarrier` for a string with plugway's prefix that does not decode.
    """
    if not isinstance(value, str) or not value.startswith(CARRIER_PREFIX):
        return None
    protocol, _, encoded = value[len(CARRIER_PREFIX) :].partition(".")
    if protocol not in _PROTOCOLS:
        raise MalformedCarrier(f"unknown protocol {protocol!r}")
    try:
        part = orjson.loads(base64.urlsafe_b64decode(encoded.encode()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise MalformedCarrier(str(exc)) from exc
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise MalformedCarrier("the carried part is not a typed object")
    return protocol, part  # type: ignore[return-value]


def _part_id(part: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(part, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def as_responses_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's reasoning state as Responses output items, in order: its own items as they
    came, and Anthropic's blocks each inside a reasoning item (its text as the summary)."""
    items: list[dict[str, Any]] = []
    for entry in message.get(REASONING_PARTS) or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("part"), dict):
            continue
        part = entry["part"]
        if entry.get("protocol") == OPENAI_RESPONSES:
            items.append(part)
        elif entry.get("protocol") == ANTHROPIC:
            text = part.get("thinking") if part.get("type") == "thinking" else None
            summary = (
                [{"type": "summary_text", "text": text}] if isinstance(text, str) and text else []
            )
            items.append(
                {
                    "type": "reasoning",
                    "id": f"rs_{_part_id(part)}",
                    "summary": summary,
                    "encrypted_content": carry(ANTHROPIC, part),
                }
            )
    return items


def as_anthropic_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's reasoning state as Anthropic content blocks, in order: its own blocks as they
    came, and OpenAI's items each inside a block: a ``thinking`` block (its summary as the text)
    when the item has a summary, else a ``redacted_thinking`` block."""
    blocks: list[dict[str, Any]] = []
    for entry in message.get(REASONING_PARTS) or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("part"), dict):
            continue
        part = entry["part"]
        if entry.get("protocol") == ANTHROPIC:
            blocks.append(part)
        elif entry.get("protocol") == OPENAI_RESPONSES:
            summary = "\n\n".join(
                str(s.get("text") or "")
                for s in part.get("summary") or ()
                if isinstance(s, dict) and s.get("text")
            )
            if summary:
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": summary,
                        "signature": carry(OPENAI_RESPONSES, part),
                    }
                )
            else:
                blocks.append({"type": "redacted_thinking", "data": carry(OPENAI_RESPONSES, part)})
    return blocks


def from_responses_item(item: dict[str, Any]) -> dict[str, Any]:
    """The reasoning part for a native item a Responses client sent back: the item, or the
    Anthropic block a reasoning item carried. Raises :class:`MalformedCarrier`."""
    inside = carried(item.get("encrypted_content")) if item.get("type") == "reasoning" else None
    return {"protocol": inside[0], "part": inside[1]} if inside else {"protocol": OPENAI_RESPONSES, "part": item}


def from_anthropic_block(block: dict[str, Any]) -> dict[str, Any]:
    """The reasoning part for a thinking block a Messages client sent back: the block, or the
    OpenAI item it carried. Raises :class:`MalformedCarrier`."""
    inside = carried(_opaque(block))
    return {"protocol": inside[0], "part": inside[1]} if inside else {"protocol": ANTHROPIC, "part": block}


def carries_foreign_parts(blocks: Iterable[Any]) -> bool:
    """Whether Anthropic content blocks hold a carrier (a part from the other protocol, or one sealed)."""
    return any(
        isinstance(block, dict)
        and block.get("type") in ("thinking", "redacted_thinking")
        and isinstance(opaque := _opaque(block), str)
        and opaque.startswith(CARRIER_PREFIX)
        for block in blocks
    )


def parts_for_model(message: dict[str, Any], protocol: Protocol) -> list[dict[str, Any]]:
    """The native parts of ``protocol`` as its model must get them back: a part that was sealed
    for the client (:func:`shown`) is opened to the one the model produced."""
    parts: list[dict[str, Any]] = []
    for entry in message.get(REASONING_PARTS) or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("part"), dict):
            continue
        kind, part = entry.get("protocol"), entry["part"]
        try:
            while (inside := carried(_opaque(part))) is not None:
                kind, part = inside
        except MalformedCarrier:
            pass  # not plugway's: the provider judges it
        if kind == protocol:
            parts.append(part)
    return parts


def _opaque(part: dict[str, Any]) -> Any:
    """The field of a part that its client echoes back unread."""
    kind = part.get("type")
    if kind == "thinking":
        return part.get("signature")
    if kind == "redacted_thinking":
        return part.get("data")
    if kind == "reasoning":
        return part.get("encrypted_content")
    return None


def shown(protocol: Protocol, part: dict[str, Any], check: Callable[[str], str]) -> dict[str, Any]:
    """The part as the client may see it, each text it shows passed through ``check`` (output
    guardrails: it returns the text, redacted or not, or raises to block the answer).

    A part whose text changed is sealed: shown with the new text and the part the model made
    inside its opaque field (:func:`carry`), so that echoed back, or kept in plugway's own
    turns, it reaches the model as it was (:func:`parts_for_model`). Signed thinking cannot be
    altered; the signature still checks because the model gets its own block back.
    """
    if protocol == ANTHROPIC and part.get("type") == "thinking" and isinstance(part.get("thinking"), str):
        text = check(part["thinking"])
        return part if text == part["thinking"] else {"type": "thinking", "thinking": text, "signature": carry(ANTHROPIC, part)}
    if protocol == OPENAI_RESPONSES and part.get("type") == "reasoning":
        changed = False
        sealed = dict(part)
        for field in ("summary", "content"):  # summary_text parts, and reasoning_text parts
            texts = part.get(field)
            if not isinstance(texts, list):
                continue
            out = []
            for entry in texts:
                if isinstance(entry, dict) and isinstance(entry.get("text"), str):
                    text = check(entry["text"])
                    if text != entry["text"]:
                        entry, changed = {**entry, "text": text}, True
                out.append(entry)
            sealed[field] = out
        if changed:
            sealed["encrypted_content"] = carry(OPENAI_RESPONSES, part)
            return sealed
    return part


def shown_parts(message: dict[str, Any], check: Callable[[str], str]) -> list[dict[str, Any]] | None:
    """A message's (or a delta's) reasoning parts as the client may see them (:func:`shown`), or
    None when it has none."""
    entries = message.get(REASONING_PARTS)
    if not entries:
        return None
    return [
        {**entry, "part": shown(entry["protocol"], entry["part"], check)}
        if isinstance(entry, dict) and entry.get("protocol") in _PROTOCOLS and isinstance(entry.get("part"), dict)
        else entry
        for entry in entries
    ]
