"""The orchestration runtime: one callable for the HTTP route and the WhatsApp worker.

Input: organisation, model, the OpenAI request body (messages and parameters),
eligible plugin ids, stream flag. Output: the final answer (or a stream of it),
summed usage and the trace. DESIGN.md's eight orchestration rules are
implemented here and in ``tools.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.config import ModelConfig, OrchestrationConfig, OrganisationConfig
from runtime.orchestration.tools import ToolCatalog, Toolset, run_round
from runtime.providers.router import ModelRouter, RouteLog
from runtime.providers.streaming import StreamAccumulator

JSON = dict[str, Any]
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass
class RunState:
    """Everything known about a run so far; read by usage accounting even if the run is abandoned."""

    request_id: str
    model: str
    orchestrated: bool = False
    rounds: int = 0
    usage: JSON = field(default_factory=lambda: {k: 0 for k in USAGE_KEYS})
    tool_calls: list[JSON] = field(default_factory=list)
    stopped_by: str | None = None
    route: RouteLog = field(default_factory=RouteLog)
    # Characters streamed in the current upstream round whose usage has not arrived yet.
    unbilled_chars: int = 0

    def add_usage(self, usage: JSON | None) -> None:
        if not usage:
            return
        self.unbilled_chars = 0
        for key in USAGE_KEYS:
            self.usage[key] += int(usage.get(key) or 0)
        for detail in ("prompt_tokens_details", "completion_tokens_details"):
            for name, value in (usage.get(detail) or {}).items():
                if isinstance(value, int):
                    bucket = self.usage.setdefault(detail, {})
                    bucket[name] = bucket.get(name, 0) + value

    def trace(self) -> JSON:
        trace: JSON = {
            "orchestrated": self.orchestrated,
            "rounds": self.rounds,
            "tool_calls": self.tool_calls,
            "stopped_by": self.stopped_by,
            "provider": self.route.provider,
            "served_model": self.route.model,
        }
        if self.route.attempts:
            trace["failed_attempts"] = self.route.attempts
        return trace


@dataclass
class RunResult:
    response: JSON
    state: RunState

    @property
    def text(self) -> str:
        return self.response["choices"][0]["message"].get("content") or ""

    @property
    def usage(self) -> JSON:
        return self.state.usage


@dataclass(frozen=True)
class Comment:
    """An SSE comment line (keep-alive or tool progress); invisible to OpenAI clients."""

    text: str


StreamEvent = JSON | Comment


def _call_key(call: JSON) -> tuple[str, str]:
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        canonical = raw
    return function.get("name") or "", canonical


class Orchestrator:
    def __init__(self, *, router: ModelRouter, catalog: ToolCatalog, config: OrchestrationConfig) -> None:
        self.router = router
        self.catalog = catalog
        self.config = config

    async def _toolset(self, organisation: OrganisationConfig, body: JSON, plugin_ids: Sequence[str] | None) -> Toolset | None:
        if body.get("tools"):
            return None
        if not organisation.plugins:
            return None
        toolset = await self.catalog.toolset(organisation, plugin_ids)
        return toolset or None

    @staticmethod
    def _base_body(body: JSON) -> JSON:
        base = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "enabled_plugin_ids")}
        if not base.get("tools"):
            base.pop("tools", None)
        return base

    # -- non-streamed ---------------------------------------------------------------

    async def complete(
        self,
        *,
        organisation: OrganisationConfig,
        model: ModelConfig,
        body: JSON,
        plugin_ids: Sequence[str] | None,
        request_id: str,
        state: RunState | None = None,
    ) -> RunResult:
        state = state or RunState(request_id=request_id, model=model.id)
        toolset = await self._toolset(organisation, body, plugin_ids)
        base = self._base_body(body)
        if toolset is None:
            answer = await self.router.chat(model, base, state.route)
            state.rounds = 1
            state.add_usage(answer.get("usage"))
            state.stopped_by = "answer"
            return RunResult(self._finish(answer, model, state, orchestrated=False), state)

        state.orchestrated = True
        messages = list(body["messages"])
        executed: set[tuple[str, str]] = set()
        client_choice = body.get("tool_choice")
        response: JSON | None = None
        for round_no in range(1, self.config.max_tool_rounds + 1):
            request = {**base, "messages": messages, "tools": toolset.openai_tools}
            request["tool_choice"] = client_choice if (round_no == 1 and client_choice) else "auto"
            response = await self.router.chat(model, request, state.route)
            state.rounds += 1
            state.add_usage(response.get("usage"))
            message = (response.get("choices") or [{}])[0].get("message") or {}
            calls = message.get("tool_calls") or []
            if not calls:
                state.stopped_by = "answer"
                return RunResult(self._finish(response, model, state, orchestrated=True), state)
            keys = [_call_key(call) for call in calls]
            if any(key in executed for key in keys):
                state.stopped_by = "repeated_call"
                break
            executed.update(keys)
            outcomes = await run_round(
                calls, toolset, organisation_id=organisation.id, request_id=request_id, config=self.config
            )
            messages.append(_assistant_turn(message.get("content"), calls))
            for outcome in outcomes:
                messages.append({"role": "tool", "tool_call_id": outcome.call_id, "content": outcome.content})
                state.tool_calls.append(outcome.trace(round_no))
        else:
            state.stopped_by = "max_tool_rounds"

        request = {**base, "messages": messages, "tools": toolset.openai_tools, "tool_choice": "none"}
        response = await self.router.chat(model, request, state.route)
        state.rounds += 1
        state.add_usage(response.get("usage"))
        _drop_tool_calls(response)
        return RunResult(self._finish(response, model, state, orchestrated=True), state)

    def _finish(self, response: JSON, model: ModelConfig, state: RunState, *, orchestrated: bool) -> JSON:
        response["model"] = model.id
        response["usage"] = dict(state.usage)
        response["plugway"] = state.trace()
        return response

    # -- streamed -------------------------------------------------------------------

    async def stream(
        self,
        *,
        organisation: OrganisationConfig,
        model: ModelConfig,
        body: JSON,
        plugin_ids: Sequence[str] | None,
        request_id: str,
        state: RunState | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield ``chat.completion.chunk`` dicts (and SSE comments) for the client.

        Content is forwarded as the model produces it; server-executed tool
        calls never reach the client; the last chunk carries the summed usage.
        """
        state = state or RunState(request_id=request_id, model=model.id)
        toolset = await self._toolset(organisation, body, plugin_ids)
        base = self._base_body(body)
        base["stream"] = True
        base["stream_options"] = {"include_usage": True}
        envelope = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model.id,
        }

        if toolset is None:
            state.rounds = 1
            async for chunk in self.router.stream(model, base, state.route):
                if chunk.get("usage"):
                    state.add_usage(chunk["usage"])
                if not chunk.get("choices"):
                    continue
                for choice in chunk["choices"]:
                    state.unbilled_chars += len((choice.get("delta") or {}).get("content") or "")
                yield {**chunk, "id": envelope["id"], "model": model.id}
            state.stopped_by = "answer"
            yield {**envelope, "choices": [], "usage": dict(state.usage)}
            return

        state.orchestrated = True
        messages = list(body["messages"])
        executed: set[tuple[str, str]] = set()
        client_choice = body.get("tool_choice")
        accumulator = StreamAccumulator()
        sent_role = False
        sent_content = False
        finish_reason: str | None = None

        def content_chunk(delta: JSON) -> JSON:
            return {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}

        async def run_upstream(request: JSON) -> AsyncIterator[StreamEvent]:
            nonlocal sent_role, sent_content, finish_reason, accumulator
            accumulator = StreamAccumulator()
            separated = False
            async for chunk in self.router.stream(model, request, state.route):
                accumulator.add(chunk)
                if chunk.get("usage"):
                    state.add_usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    if choice.get("index", 0) != 0:
                        continue
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if not sent_role:
                            yield content_chunk({"role": "assistant", "content": ""})
                            sent_role = True
                        if sent_content and not separated:
                            # A new round's text follows an earlier round's: keep them apart.
                            yield content_chunk({"content": "\n\n"})
                        separated = True
                        sent_content = True
                        state.unbilled_chars += len(text)
                        yield content_chunk({"content": text})
            finish_reason = accumulator.finish_reason

        final_request: JSON | None = None
        for round_no in range(1, self.config.max_tool_rounds + 1):
            request = {**base, "messages": messages, "tools": toolset.openai_tools}
            request["tool_choice"] = client_choice if (round_no == 1 and client_choice) else "auto"
            async for event in run_upstream(request):
                yield event
            state.rounds += 1
            message = accumulator.message()
            calls = message.get("tool_calls") or []
            if not calls:
                state.stopped_by = "answer"
                break
            keys = [_call_key(call) for call in calls]
            if any(key in executed for key in keys):
                state.stopped_by = "repeated_call"
                final_request = {**base, "messages": messages, "tools": toolset.openai_tools, "tool_choice": "none"}
                break
            executed.update(keys)
            for call in calls:
                yield Comment("plugway tool_call " + orjson.dumps({"round": round_no, "name": call["function"]["name"]}).decode())
            outcomes = await run_round(
                calls, toolset, organisation_id=organisation.id, request_id=request_id, config=self.config
            )
            messages.append(_assistant_turn(message.get("content"), calls))
            for outcome in outcomes:
                messages.append({"role": "tool", "tool_call_id": outcome.call_id, "content": outcome.content})
                entry = outcome.trace(round_no)
                state.tool_calls.append(entry)
                yield Comment("plugway tool_result " + orjson.dumps(entry).decode())
        else:
            state.stopped_by = "max_tool_rounds"
            final_request = {**base, "messages": messages, "tools": toolset.openai_tools, "tool_choice": "none"}

        if final_request is not None:
            async for event in run_upstream(final_request):
                yield event
            state.rounds += 1

        if not sent_role:
            yield content_chunk({"role": "assistant", "content": ""})
        final_reason = "stop" if finish_reason in (None, "tool_calls") else finish_reason
        yield {**envelope, "choices": [{"index": 0, "delta": {}, "finish_reason": final_reason, "logprobs": None}]}
        yield {**envelope, "choices": [], "usage": dict(state.usage), "plugway": state.trace()}


def _assistant_turn(content: str | None, calls: list[JSON]) -> JSON:
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {"id": call.get("id"), "type": "function", "function": call.get("function")} for call in calls
        ],
    }


def _drop_tool_calls(response: JSON) -> None:
    """A provider may still emit tool calls under ``tool_choice: "none"``; the client never sees them."""
    for choice in response.get("choices") or ():
        message = choice.get("message") or {}
        if message.pop("tool_calls", None) is not None and choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"
