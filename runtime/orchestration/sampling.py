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

import dataclasses
import time
from typing import Protocol

from runtime.admission import AdmissionServices, allow_spending
from runtime.config import ModelConfig, SamplingConfig
from runtime.errors import GatewayError
from runtime.json_types import JSON
from runtime.plugin_host.tool import Sampler, SamplingRequest, SamplingResult, ToolError
from runtime.request import DoorRules, RequestContext, RouteLog, RunState

# Inside an admitted call: the organisation's budget and the key's daily tokens, not its RPM.
SAMPLING_DOOR = DoorRules("mcp-sampling", rpm=False)
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

    def __call__(self, ctx: RequestContext, call_id: str) -> Sampler:
        config = self.config
        left = {"calls": config.max_calls_per_tool_call, "tokens": config.max_tokens_per_tool_call}
        sampling_ctx = dataclasses.replace(ctx, door=SAMPLING_DOOR)
        services = self.services

        async def sample(request: SamplingRequest) -> SamplingResult:
            if left["calls"] <= 0:
                raise ToolError(f"This tool call already asked the model {config.max_calls_per_tool_call} times (its sampling budget).")
            if left["tokens"] <= 0:
                raise ToolError(f"This tool call used its sampling budget of {config.max_tokens_per_tool_call} tokens.")
            left["calls"] -= 1
            try:
                await allow_spending(services, SAMPLING_DOOR, ctx.organisation, ctx.key)
            except GatewayError as exc:
                if exc.code == "rate_limit_exceeded":
                    raise ToolError("The key's daily token limit is reached; the model cannot be asked now.") from None
                raise ToolError(f"The model cannot be asked now: {exc.message}") from None
            body: JSON = {
                "model": ctx.model.id,
                "messages": ([{"role": "system", "content": request.system}] if request.system else []) + list(request.messages),
                "max_tokens": max(1, min(request.max_tokens, left["tokens"])),
            }
            if request.temperature is not None:
                body["temperature"] = request.temperature
            if request.stop:
                body["stop"] = request.stop[:4]
            state = RunState(request_id=f"{ctx.request_id}:sampling:{call_id}", model=ctx.model.id)
            started = time.perf_counter()
            status = "error"
            try:
                state.round_started()
                response = await services.router.chat(ctx.model, body, state.route)
                state.answered(response.get("usage"))
                status = "ok"
            except GatewayError as exc:
                status = exc.code
                raise ToolError(f"The model could not answer: {exc.message}") from None
            finally:
                services.record_usage(sampling_ctx, state, started, status)
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
