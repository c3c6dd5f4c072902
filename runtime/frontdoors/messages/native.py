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
from runtime.billing import checked_usage
from runtime.orchestration.events import ModelTurn
from runtime.orchestration.loop import RunState
from runtime.providers.anthropic_translate import anthropic_usage, openai_usage
from runtime.providers.router import ModelRouter
from runtime.telemetry import current as telemetry

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
    # The one upstream round gets its span, as the loop's rounds do.
    with telemetry().model_round(ctx, body, 1, False) as observed:
        message = await router.messages(ctx.model, body, state.route)
        state.phase = "idle"
        state.rounds = 1
        state.stopped_by = "answer"
        usage = openai_usage(message.get("usage") or {})
        counted = state.add_usage(usage, prompt=body, output=message.get("content"))
        if counted is not None and counted != usage:
            # The upstream's figures could not be billed: the client sees the ones that were.
            message["usage"] = {**(message.get("usage") or {}), **anthropic_usage(counted)}
        observed.finished(state.route, ModelTurn(1, message, message.get("stop_reason"), usage, message))
    message["model"] = ctx.model.id
    return message


async def native_stream(router: ModelRouter, ctx: RequestContext, body: JSON, state: RunState) -> AsyncGenerator[NativeEvent, None]:
    usage: JSON = {}
    answered: JSON = {}  # the upstream's message id and model, and why it stopped: for the round's span
    state.phase = "model"
    with telemetry().model_round(ctx, body, 1, True) as observed:
        async for event in router.stream_messages(ctx.model, body, state.route):
            kind = event.get("type")
            if kind == "message_start":
                message = event.get("message") or {}
                usage.update(message.get("usage") or {})
                answered.update(id=message.get("id"), model=message.get("model"))
                message = {**message, "model": ctx.model.id}
                reported = openai_usage(usage)
                if (counted := checked_usage(reported, prompt=body, request_id=ctx.request_id)) != reported:
                    message["usage"] = {**(message.get("usage") or {}), **anthropic_usage(counted)}
                event = {**event, "message": message}
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                state.unbilled_chars += len(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
            elif kind == "message_delta":
                # Anthropic's counts here are cumulative totals: they replace, never add.
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                reported = openai_usage(usage)
                counted_delta = state.add_usage(reported, prompt=body)
                if counted_delta is not None and counted_delta != reported:
                    event = {**event, "usage": {**(event.get("usage") or {}), **anthropic_usage(counted_delta)}}
                answered["stop_reason"] = (event.get("delta") or {}).get("stop_reason") or answered.get("stop_reason")
            yield NativeEvent(event)
        state.rounds = 1
        state.stopped_by = "answer"
        state.phase = "idle"
        observed.finished(state.route, ModelTurn(1, {}, answered.get("stop_reason"), openai_usage(usage), answered))
