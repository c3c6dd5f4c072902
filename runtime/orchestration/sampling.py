"""MCP sampling through plugway's own runtime: a server's request for a completion is served
by the model of the request in whose loop the tool call runs.

Each tool call gets its own :class:`~runtime.plugin_host.tool.Sampler`, bound to the
admitted request: same model (with its fallbacks), same organisation budget, the
key's daily-token cap, usage recorded with source ``mcp-sampling``, and a budget
per tool call (``orchestration.sampling``: calls and tokens). Sampling never
offers tools, so a server cannot recurse into the loop.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from runtime.errors import GatewayError
from runtime.limits import LimiterUnavailable
from runtime.orchestration.loop import RunState
from runtime.plugin_host.tool import Sampler, SamplingRequest, SamplingResult, ToolError

if TYPE_CHECKING:
    from runtime.admission import RequestContext
    from runtime.gateway import Gateway

SAMPLING_SOURCE = "mcp-sampling"
_STOP_REASONS = {"stop": "endTurn", "length": "maxTokens", "content_filter": "endTurn", "tool_calls": "endTurn"}


class ModelSampling:
    """Makes the per-call samplers (the orchestrator's ``sampling`` factory)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, ctx: RequestContext, call_id: str) -> Sampler:
        config = self.gateway.settings.orchestration.sampling
        left = {"calls": config.max_calls_per_tool_call, "tokens": config.max_tokens_per_tool_call}
        sampling_ctx = dataclasses.replace(ctx, source=SAMPLING_SOURCE)
        gateway = self.gateway

        async def sample(request: SamplingRequest) -> SamplingResult:
            if left["calls"] <= 0:
                raise ToolError(f"This tool call already asked the model {config.max_calls_per_tool_call} times (its sampling budget).")
            if left["tokens"] <= 0:
                raise ToolError(f"This tool call used its sampling budget of {config.max_tokens_per_tool_call} tokens.")
            left["calls"] -= 1
            try:
                await gateway.budget.check(ctx.organisation)
                if ctx.key is not None and ctx.key.daily_tokens is not None:
                    decision = await gateway.limiter.acquire(ctx.key.id, rpm=None, daily_tokens=ctx.key.daily_tokens)
                    if not decision.allowed:
                        raise ToolError("The key's daily token limit is reached; the model cannot be asked now.")
            except GatewayError as exc:
                raise ToolError(f"The model cannot be asked now: {exc.message}") from None
            except LimiterUnavailable:
                raise ToolError("The model cannot be asked now: the rate limiter is unavailable.") from None
            body: dict[str, Any] = {
                "model": ctx.model.id,
                "messages": ([{"role": "system", "content": request.system}] if request.system else []) + list(request.messages),
                "max_tokens": max(1, min(request.max_tokens, left["tokens"])),
            }
            if request.temperature is not None:
                body["temperature"] = request.temperature
            if request.stop:
                body["stop"] = request.stop[:4]
            state = RunState(request_id=f"{ctx.request_id}:sampling:{call_id}", model=ctx.model.id, organisation=ctx.organisation.id)
            started = time.perf_counter()
            status = "error"
            try:
                response = await gateway.router.chat(ctx.model, body, state.route)
                state.rounds = 1
                state.add_usage(response.get("usage"))
                status = "ok"
            except GatewayError as exc:
                status = exc.code
                raise ToolError(f"The model could not answer: {exc.message}") from None
            finally:
                gateway.record_usage(sampling_ctx, state, started, status)
            left["tokens"] -= state.usage["total_tokens"]
            choice = (response.get("choices") or [{}])[0]
            message = choice.get("message") or {}
            return SamplingResult(
                text=str(message.get("content") or ""),
                model=state.route.model or ctx.model.id,
                stop_reason=_STOP_REASONS.get(choice.get("finish_reason") or "stop", "endTurn"),
                prompt_tokens=int(state.usage["prompt_tokens"]),
                completion_tokens=int(state.usage["completion_tokens"]),
            )

        return sample
