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

Each adapter re-emits the parts of its own protocol and drops the rest (:func:`parts_of`), and
an adapter speaking plain chat completions upstream removes the key (:func:`without_parts`):
the key never reaches a wire that does not know it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

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
