"""MCP sampling through plugway's own runtime: a server's request for a completion is served
by the model of the request in whose loop the tool call runs.

Each tool call gets its own :class:`~runtime.plugin_host.tool.Sampler`, bound to the
admitted request: same model (with its fallbacks), same organisation budget, the
key's daily-token cap (admission's last steps, :func:`~runtime.admission.allow_spending`,
under :data:`SAMPLING_DOOR`), usage recorded with source ``mcp-sampling`` through the
one accounting path, and a budget per tool call (``orchestration.sampling``: calls and
tokens). Sampling never offers tools, so a server cannot recurse into the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Protocol

from runtime.admission import AdmissionServices, allow_spending
from runtime.billing import plan_reservation, serving_prices
from runtime.config import ModelConfig, SamplingConfig
from runtime.errors import GatewayError
from runtime.json_types import JSON
from runtime.plugin_host.tool import Sampler, SamplingRequest, SamplingResult, ToolError
from runtime.request import DoorRules, RequestContext, RouteLog, RunState

# Inside an admitted call: the organisation's budget and the key's daily tokens, not its RPM.
SAMPLING_DOOR = DoorRules("mcp-sampling", rpm=False)
# How long a sampling call whose tool call was cut off is still awaited for its real usage.
ABANDONED_SAMPLING_WAIT_S = 30.0
_STOP_REASONS = {"stop": "endTurn", "length": "maxTokens", "content_filter": "endTurn", "tool_calls": "endTurn"}


class ChatRouter(Protocol):
    async def chat(self, model: ModelConfig, body: JSON, route: RouteLog | None = None) -> JSON: ...


class SamplingServices(AdmissionServices, Protocol):
    """What sampling needs from the gateway: admission's services, a model to ask, the accounting path."""

    @property
    def router(self) -> ChatRouter: ...

    def record_usage(self, ctx: RequestContext, state: RunState, started: float, status: str) -> None: ...


class ModelSampling:
    """Makes the per-call samplers (the orchestrator's ``sampling`` factory)."""

    def __init__(self, services: SamplingServices, config: SamplingConfig) -> None:
        self.services = services
        self.config = config
        self._billing: set[asyncio.Task[None]] = set()  # cut-off sampling calls waiting for their usage

    def _bill_later(self, ctx: RequestContext, state: RunState, started: float, upstream: asyncio.Future[Any], body: JSON) -> None:
        task = asyncio.get_running_loop().create_task(self._bill_when_answered(ctx, state, started, upstream, body))
        self._billing.add(task)
        task.add_done_callback(self._billing.discard)

    async def _bill_when_answered(
        self, ctx: RequestContext, state: RunState, started: float, upstream: asyncio.Future[Any], body: JSON
    ) -> None:
        """Record a cut-off sampling call's usage: the upstream's own figures if they come within
        ``ABANDONED_SAMPLING_WAIT_S``, else the prompt as sent (it reached the provider)."""
        try:
            async with asyncio.timeout(ABANDONED_SAMPLING_WAIT_S):
                response = await upstream
            state.answered(response.get("usage"), prompt=body, output=_message(response))
        except BaseException:  # failed, too slow, or the gateway shutting down: estimate
            upstream.cancel()
            prompt = plan_reservation(self.services.settings, body, orchestrated=False).prompt_tokens
            state.usage.update(prompt_tokens=prompt, completion_tokens=0, total_tokens=prompt)
        finally:
            self.services.record_usage(ctx, state, started, "abandoned")

    def __call__(self, ctx: RequestContext, call_id: str) -> Sampler:
        config = self.config
        left = {"calls": config.max_calls_per_tool_call, "tokens": config.max_tokens_per_tool_call}
        # Never the request's own reservation: that one settles with the request.
        sampling_ctx = dataclasses.replace(ctx, door=SAMPLING_DOOR, reservation=None)
        services = self.services

        async def sample(request: SamplingRequest) -> SamplingResult:
            if left["calls"] <= 0:
                raise ToolError(f"This tool call already asked the model {config.max_calls_per_tool_call} times (its sampling budget).")
            if left["tokens"] <= 0:
                raise ToolError(f"This tool call used its sampling budget of {config.max_tokens_per_tool_call} tokens.")
            left["calls"] -= 1
            body: JSON = {
                "model": ctx.model.id,
                "messages": ([{"role": "system", "content": request.system}] if request.system else []) + list(request.messages),
                "max_tokens": max(1, min(request.max_tokens, left["tokens"])),
            }
            # Each sampling is an upstream call of its own: it holds its most of the budget and
            # of the key's daily tokens until it settles, like an admitted request.
            planned = plan_reservation(services.settings, body, orchestrated=False)
            try:
                limits, reservation = await allow_spending(
                    services,
                    SAMPLING_DOOR,
                    ctx.organisation,
                    ctx.key,
                    planned=planned,
                    prices=serving_prices(ctx.model, services.configured_model),
                    within=ctx.reservation,
                )
            except GatewayError as exc:
                if exc.code == "rate_limit_exceeded":
                    raise ToolError("The key's daily token limit is reached; the model cannot be asked now.") from None
                raise ToolError(f"The model cannot be asked now: {exc.message}") from None
            call_ctx = dataclasses.replace(sampling_ctx, limits=limits, reservation=reservation)
            if request.temperature is not None:
                body["temperature"] = request.temperature
            if request.stop:
                body["stop"] = request.stop[:4]
            state = RunState(request_id=f"{ctx.request_id}:sampling:{call_id}", model=ctx.model.id, organisation=ctx.organisation.id)
            started = time.perf_counter()
            state.round_started()
            upstream = asyncio.ensure_future(services.router.chat(ctx.model, body, state.route))
            try:
                response = await asyncio.shield(upstream)
            except asyncio.CancelledError:
                # The tool call was cut off (its time ran out, the client left) while the upstream
                # was answering: that call is paid for, so it is billed when its answer comes.
                self._bill_later(call_ctx, state, started, upstream, body)
                raise
            except GatewayError as exc:
                services.record_usage(call_ctx, state, started, exc.code)
                raise ToolError(f"The model could not answer: {exc.message}") from None
            except BaseException:
                services.record_usage(call_ctx, state, started, "error")
                raise
            state.answered(response.get("usage"), prompt=body, output=_message(response))
            services.record_usage(call_ctx, state, started, "ok")
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


def _message(response: JSON) -> JSON | None:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return message if isinstance(message, dict) else None
