"""MCP sampling through plugway's own runtime: a server's request for a completion is served
by the model of the request in whose loop the tool call runs.

Each tool call gets its own :class:`~runtime.plugin_host.tool.Sampler`, bound to the
admitted request: same model (with its fallbacks), same organisation budget, the
key's daily-token cap, usage recorded with source ``mcp-sampling``, and a budget
per tool call (``orchestration.sampling``: calls and tokens). Sampling never
offers tools, so a server cannot recurse into the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from runtime.billing import Reservation, plan_reservation, serving_prices
from runtime.errors import GatewayError
from runtime.limits import LimiterUnavailable
from runtime.limits.decision import UNLIMITED
from runtime.orchestration.loop import RunState
from runtime.plugin_host.tool import Sampler, SamplingRequest, SamplingResult, ToolError

if TYPE_CHECKING:
    from runtime.admission import RequestContext
    from runtime.gateway import Gateway

SAMPLING_SOURCE = "mcp-sampling"
# How long a sampling call whose tool call was cut off is still awaited for its real usage.
ABANDONED_SAMPLING_WAIT_S = 30.0
_STOP_REASONS = {"stop": "endTurn", "length": "maxTokens", "content_filter": "endTurn", "tool_calls": "endTurn"}


class ModelSampling:
    """Makes the per-call samplers (the orchestrator's ``sampling`` factory)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._billing: set[asyncio.Task[None]] = set()  # cut-off sampling calls waiting for their usage

    def _bill_later(self, ctx: RequestContext, state: RunState, started: float, upstream: asyncio.Future[Any], body: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._bill_when_answered(ctx, state, started, upstream, body))
        self._billing.add(task)
        task.add_done_callback(self._billing.discard)

    async def _bill_when_answered(
        self, ctx: RequestContext, state: RunState, started: float, upstream: asyncio.Future[Any], body: Any
    ) -> None:
        """Record a cut-off sampling call's usage: the upstream's own figures if they come within
        ``ABANDONED_SAMPLING_WAIT_S``, else the prompt as sent (it reached the provider)."""
        try:
            async with asyncio.timeout(ABANDONED_SAMPLING_WAIT_S):
                response = await upstream
            state.rounds = 1
            state.add_usage(response.get("usage"), prompt=body, output=_message(response))
        except BaseException:  # failed, too slow, or the gateway shutting down: estimate
            upstream.cancel()
            prompt = plan_reservation(self.gateway.settings, body, orchestrated=False).prompt_tokens
            state.usage.update(prompt_tokens=prompt, completion_tokens=0, total_tokens=prompt)
        finally:
            self.gateway.record_usage(ctx, state, started, "abandoned")

    def __call__(self, ctx: RequestContext, call_id: str) -> Sampler:
        config = self.gateway.settings.orchestration.sampling
        left = {"calls": config.max_calls_per_tool_call, "tokens": config.max_tokens_per_tool_call}
        # Never the request's own reservation: that one settles with the request.
        sampling_ctx = dataclasses.replace(ctx, source=SAMPLING_SOURCE, reservation=None)
        gateway = self.gateway

        async def sample(request: SamplingRequest) -> SamplingResult:
            if left["calls"] <= 0:
                raise ToolError(f"This tool call already asked the model {config.max_calls_per_tool_call} times (its sampling budget).")
            if left["tokens"] <= 0:
                raise ToolError(f"This tool call used its sampling budget of {config.max_tokens_per_tool_call} tokens.")
            left["calls"] -= 1
            body: dict[str, Any] = {
                "model": ctx.model.id,
                "messages": ([{"role": "system", "content": request.system}] if request.system else []) + list(request.messages),
                "max_tokens": max(1, min(request.max_tokens, left["tokens"])),
            }
            # Each sampling is an upstream call of its own: it holds its most of the budget and
            # of the key's daily tokens until it settles, like an admitted request.
            planned = plan_reservation(gateway.settings, body, orchestrated=False)
            budget_hold: int | None = None
            try:
                budget_hold = await gateway.budget.check(
                    ctx.organisation,
                    reserve_usd=planned.cost_usd(serving_prices(ctx.model, gateway.router.model)),
                    within_hold=ctx.reservation.budget_hold if ctx.reservation is not None else None,
                )
                decision = UNLIMITED
                if ctx.key is not None and ctx.key.daily_tokens is not None:
                    decision = await gateway.limiter.acquire(
                        ctx.key.id,
                        rpm=None,
                        daily_tokens=ctx.key.daily_tokens,
                        reserve_tokens=min(planned.tokens, ctx.key.daily_tokens),
                        within_reservation=ctx.limits.reservation_id,
                    )
                    if not decision.allowed:
                        raise ToolError("The key's daily token limit is reached; the model cannot be asked now.")
            except GatewayError as exc:
                gateway.budget.release(ctx.organisation.id, budget_hold)
                raise ToolError(f"The model cannot be asked now: {exc.message}") from None
            except LimiterUnavailable:
                gateway.budget.release(ctx.organisation.id, budget_hold)
                raise ToolError("The model cannot be asked now: the rate limiter is unavailable.") from None
            except BaseException:
                gateway.budget.release(ctx.organisation.id, budget_hold)
                raise
            call_ctx = dataclasses.replace(
                sampling_ctx, limits=decision, reservation=Reservation(ctx.organisation.id, budget_hold, decision.reservation_id)
            )
            if request.temperature is not None:
                body["temperature"] = request.temperature
            if request.stop:
                body["stop"] = request.stop[:4]
            state = RunState(request_id=f"{ctx.request_id}:sampling:{call_id}", model=ctx.model.id, organisation=ctx.organisation.id)
            started = time.perf_counter()
            upstream = asyncio.ensure_future(gateway.router.chat(ctx.model, body, state.route))
            try:
                response = await asyncio.shield(upstream)
            except asyncio.CancelledError:
                # The tool call was cut off (its time ran out, the client left) while the upstream
                # was answering: that call is paid for, so it is billed when its answer comes.
                self._bill_later(call_ctx, state, started, upstream, body)
                raise
            except GatewayError as exc:
                gateway.record_usage(call_ctx, state, started, exc.code)
                raise ToolError(f"The model could not answer: {exc.message}") from None
            except BaseException:
                gateway.record_usage(call_ctx, state, started, "error")
                raise
            state.rounds = 1
            state.add_usage(response.get("usage"), prompt=body, output=_message(response))
            gateway.record_usage(call_ctx, state, started, "ok")
            left["tokens"] -= state.usage["total_tokens"]
            choice = (response.get("choices") or [{}])[0]
            message = _message(response) or {}
            return SamplingResult(
                text=str(message.get("content") or ""),
                model=state.route.model or ctx.model.id,
                stop_reason=_STOP_REASONS.get(choice.get("finish_reason") or "stop", "endTurn"),
                prompt_tokens=int(state.usage["prompt_tokens"]),
                completion_tokens=int(state.usage["completion_tokens"]),
            )

        return sample


def _message(response: dict[str, Any]) -> dict[str, Any] | None:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return message if isinstance(message, dict) else None
