"""The native path: an Anthropic model gets the client's Messages body as it is.

Retries, fallbacks along an all-Anthropic chain, circuit breakers, limits,
budgets, guardrails and usage records are the same as everywhere; only the
translation is skipped, so features the OpenAI shape cannot carry (extended
thinking and its signatures, cache control, citations) reach the model
untouched. Guardrails read the Anthropic shapes directly: the system prompt and
the text blocks of every message on input, the text blocks of the answer (or
the text deltas of the stream, held back per block as the loop holds them) and
its thinking on output: a thinking block is checked whole (streamed, its deltas
are held until the block ends) and, when a guardrail changed its text, sealed
(:func:`runtime.reasoning.shown`): the client sees the redacted text, and the
block it sends back reaches the model as the model made it. Usage is read from the answer (``message_start`` and the cumulative
``message_delta``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from runtime.errors import guardrail_blocked
from runtime.gateway import requested_model
from runtime.guardrails import Finding, GuardrailBlocked, Guardrails, StreamRedactor
from runtime.json_types import JSON
from runtime.limits.usage import checked_usage
from runtime.orchestration.events import ModelTurn
from runtime.providers.anthropic_translate import anthropic_usage, openai_usage
from runtime.providers.router import ModelRouter
from runtime.reasoning import ANTHROPIC, shown
from runtime.request import RequestContext, RunState
from runtime.telemetry import current as telemetry


@dataclass(slots=True)
class NativeEvent:
    """One Anthropic stream event, model already renamed to what the client asked for."""

    data: JSON

    @property
    def name(self) -> str:
        return str(self.data.get("type") or "message")


async def native_message(router: ModelRouter, ctx: RequestContext, body: JSON, state: RunState) -> JSON:
    body = _guarded_input(ctx.guardrails, state, body)
    state.round_started()
    # The one upstream round gets its span, as the loop's rounds do.
    with telemetry().model_round(ctx.model, body, 1, False) as observed:
        message = await router.messages(ctx.model, body, state.route)
        usage = openai_usage(message.get("usage") or {})
        counted = state.answered(usage, prompt=body, output=message.get("content"))
        if counted is not None and counted != usage:
            # The upstream's figures could not be billed: the client sees the ones that were.
            message["usage"] = {**(message.get("usage") or {}), **anthropic_usage(counted)}
        observed.finished(state.route, ModelTurn(1, message, message.get("stop_reason"), usage, message))
    message["model"] = requested_model(ctx)
    guard = ctx.guardrails
    if guard is not None and guard.applies_to("output"):
        with _hits(state, "output") as findings:
            check = guard.checker("output", findings)
            for i, block in enumerate(message.get("content") or ()):
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    block["text"] = check(block["text"])
                elif isinstance(block, dict) and block.get("type") == "thinking":
                    message["content"][i] = shown(ANTHROPIC, block, check)
    return message



async def native_stream(router: ModelRouter, ctx: RequestContext, body: JSON, state: RunState) -> AsyncGenerator[NativeEvent, None]:
    body = _guarded_input(ctx.guardrails, state, body)
    guard = ctx.guardrails if ctx.guardrails is not None and ctx.guardrails.applies_to("output") else None
    redactors: dict[int, StreamRedactor] = {}
    thinking: dict[int, JSON] = {}  # a thinking block held whole while guardrails apply: index -> block
    usage: JSON = {}
    answered: JSON = {}  # the upstream's message id and model, and why it stopped: for the round's span
    state.round_started()
    with telemetry().model_round(ctx.model, body, 1, True) as observed, _hits(state, "output", redactors) as findings:
        async for event in router.stream_messages(ctx.model, body, state.route):
            kind = event.get("type")
            if kind == "message_start":
                message = event.get("message") or {}
                usage.update(message.get("usage") or {})
                answered.update(id=message.get("id"), model=message.get("model"))
                message = {**message, "model": requested_model(ctx)}
                reported = openai_usage(usage)
                if (counted := checked_usage(reported, prompt=body, request_id=ctx.request_id)) != reported:
                    message["usage"] = {**(message.get("usage") or {}), **anthropic_usage(counted)}
                event = {**event, "message": message}
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                state.unbilled_chars += len(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
                if guard is not None and delta.get("type") in ("thinking_delta", "signature_delta"):
                    # Checked once whole (a signed block cannot be shown in part and fixed later).
                    block = thinking.setdefault(int(event.get("index") or 0), {"type": "thinking", "thinking": "", "signature": ""})
                    key = "thinking" if delta["type"] == "thinking_delta" else "signature"
                    block[key] += str(delta.get(key) or "")
                    continue
                if guard is not None and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    index = int(event.get("index") or 0)
                    redactor = redactors.get(index)
                    if redactor is None:
                        redactor = redactors[index] = guard.stream_redactor("output")
                    event = {**event, "delta": {**delta, "text": redactor.feed(delta["text"])}}
            elif kind == "content_block_stop" and guard is not None:
                index = int(event.get("index") or 0)
                if index in thinking:
                    block = shown(ANTHROPIC, thinking.pop(index), guard.checker("output", findings))
                    for key, delta_type in (("thinking", "thinking_delta"), ("signature", "signature_delta")):
                        yield NativeEvent({"type": "content_block_delta", "index": index, "delta": {"type": delta_type, key: block[key]}})
                redactor = redactors.get(index)
                held = redactor.finish() if redactor is not None else ""
                if held:
                    yield NativeEvent({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": held}})
            elif kind == "message_delta":
                # Anthropic's counts here are cumulative totals: they replace, never add.
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                reported = openai_usage(usage)
                counted_delta = state.add_usage(reported, prompt=body)
                if counted_delta is not None and counted_delta != reported:
                    event = {**event, "usage": {**(event.get("usage") or {}), **anthropic_usage(counted_delta)}}
                answered["stop_reason"] = (event.get("delta") or {}).get("stop_reason") or answered.get("stop_reason")
            yield NativeEvent(event)
        state.answered()
        observed.finished(state.route, ModelTurn(1, {}, answered.get("stop_reason"), openai_usage(usage), answered))


def _guarded_input(guard: Guardrails | None, state: RunState, body: JSON) -> JSON:
    """The body with the system prompt and every message's text checked (Anthropic's text blocks are the loop's text parts)."""
    if guard is None or not guard.applies_to("input"):
        return body
    system = body.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str | list) else []
    with _hits(state, "input") as findings:
        checked, found = guard.check_messages([*head, *(body.get("messages") or [])], "input")
        findings.extend(found)
    if head:
        return {**body, "system": checked[0]["content"], "messages": checked[1:]}
    return {**body, "messages": checked}


@contextmanager
def _hits(state: RunState, stage: str, redactors: dict[int, StreamRedactor] | None = None) -> Iterator[list[Finding]]:
    """Collect a stage's findings (a block's and the stream redactors' included) into the run's
    guardrail hits however the work ends; a block becomes the guardrail's error, as in the loop."""
    findings: list[Finding] = []
    try:
        yield findings
    except GuardrailBlocked as blocked:
        findings.extend(blocked.findings)
        raise guardrail_blocked(blocked.guardrail_key, blocked.findings) from None
    finally:
        for redactor in (redactors or {}).values():
            findings.extend(redactor.findings)
        if findings:
            state.guardrail_hits.append((stage, list(dict.fromkeys(findings))))
