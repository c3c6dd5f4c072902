"""The native path: an Anthropic model gets the client's Messages body as it is.

Retries, fallbacks along an all-Anthropic chain, circuit breakers, limits,
budgets and usage records are the same as everywhere; only the translation
is skipped, so features the OpenAI shape cannot carry (extended thinking and
its signatures, cache control, citations) reach the model untouched. Usage is
read from the answer (``message_start`` and the cumulative ``message_delta``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from runtime.admission import RequestContext
from runtime.orchestration.loop import RunState
from runtime.providers.anthropic_translate import openai_usage
from runtime.providers.router import ModelRouter

JSON = dict[str, Any]


@dataclass(slots=True)
class NativeEvent:
    """One Anthropic stream event, model already renamed to what the client asked for."""

    data: JSON

    @property
    def name(self) -> str:
        return str(self.data.get("type") or "message")


async def native_message(router: ModelRouter, ctx: RequestContext, body: JSON, state: RunState) -> JSON:
    state.phase = "model"
    message = await router.messages(ctx.model, body, state.route)
    state.phase = "idle"
    state.rounds = 1
    state.stopped_by = "answer"
    state.add_usage(openai_usage(message.get("usage") or {}))
    message["model"] = ctx.model.id
    return message


async def native_stream(router: ModelRouter, ctx: RequestContext, body: JSON, state: RunState) -> AsyncGenerator[NativeEvent, None]:
    usage: JSON = {}
    state.phase = "model"
    async for event in router.stream_messages(ctx.model, body, state.route):
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            usage.update(message.get("usage") or {})
            event = {**event, "message": {**message, "model": ctx.model.id}}
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            state.unbilled_chars += len(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
        elif kind == "message_delta":
            # Anthropic's counts here are cumulative totals: they replace, never add.
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            state.add_usage(openai_usage(usage))
        yield NativeEvent(event)
    state.rounds = 1
    state.stopped_by = "answer"
    state.phase = "idle"
