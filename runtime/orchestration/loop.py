"""The orchestration loop: one loop, streamed or not, for every front door.

Input: the admitted :class:`~runtime.request.RequestContext` (organisation,
model, eligible plugins) and a :class:`RunRequest` (an OpenAI chat-completions
body, whether to stream, and approvals to resume). Output: the events of
``runtime.orchestration.events``, ending with one ``Completed``. Streaming
changes only how each round talks to the provider; every rule of DESIGN.md
(first-round ``tool_choice``, concurrent tool calls, the round limit, the
repeated-call stop, the final ``tool_choice: "none"`` round, summed usage, the
trace) lives here once. Tool execution itself is in ``tools.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

import orjson

from runtime.config import OrchestrationConfig
from runtime.errors import guardrail_blocked
from runtime.guardrails import Finding, GuardrailBlocked, Guardrails, StreamRedactor
from runtime.json_types import JSON
from runtime.orchestration.code_mode import (
    RUN_SCRIPT,
    SCRIPT_SERVER,
    CodeTools,
    Sandbox,
    ScriptRun,
    resolve_mode,
    uses_code_mode,
)
from runtime.orchestration.events import (
    ApprovalRequired,
    Completed,
    Event,
    ModelChunk,
    ModelTurn,
    PendingCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    ToolsOffered,
)
from runtime.orchestration.tools import (
    TOOL_SEARCH_NAME,
    ToolCatalog,
    Toolset,
    error_content,
    run_tool_call,
    run_tool_search,
)
from runtime.plugin_host.tool import Sampler
from runtime.providers.router import ModelRouter
from runtime.providers.streaming import StreamAccumulator
from runtime.reasoning import REASONING_PARTS, shown_parts
from runtime.request import RequestContext, RunRequest, RunState
from runtime.telemetry import current as telemetry

SamplerFactory = Callable[[RequestContext, str], Sampler]
# Request fields that are the gateway's own and never go upstream.
GATEWAY_FIELDS = frozenset({"stream", "stream_options", "enabled_plugin_ids", "request_id", "orchestration_mode"})
REFUSED_BY_CLIENT = "The user did not approve this tool call, so it was not run."
CODE_TOOLS_CACHED = 256  # code-mode faces of toolsets kept


def _call_key(call: JSON) -> tuple[str, str]:
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        canonical = raw
    return function.get("name") or "", canonical


def end_user_of(body: JSON) -> str | None:
    """The end user a chat body names (``user``, or ``safety_identifier``), for per-user MCP servers."""
    for field in ("user", "safety_identifier"):
        value = body.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def upstream_base(body: JSON) -> JSON:
    """The request as the provider gets it: the gateway's own fields removed."""
    base = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    if not base.get("tools"):
        base.pop("tools", None)
    return base


class Orchestrator:
    def __init__(
        self,
        *,
        router: ModelRouter,
        catalog: ToolCatalog,
        config: OrchestrationConfig,
        sampling: SamplerFactory | None = None,
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.config = config
        # Builds each tool call's sampler (MCP sampling through this request's model and limits).
        self.sampling = sampling
        self.sandbox = Sandbox(config.code_mode)
        self._code_tools: dict[int, tuple[Toolset, CodeTools]] = {}

    async def aclose(self) -> None:
        await self.sandbox.aclose()

    def code_tools(self, ctx: RequestContext, request: RunRequest, toolset: Toolset) -> CodeTools | None:
        """The code-mode tools when this run is in code mode (None: classic)."""
        mode = resolve_mode(request.mode or request.body.get("orchestration_mode"), ctx, self.config)
        if not uses_code_mode(mode, toolset, self.config.code_mode):
            return None
        cached = self._code_tools.get(id(toolset))
        if cached is None or cached[0] is not toolset:
            if len(self._code_tools) >= CODE_TOOLS_CACHED:
                # Toolsets are rebuilt when catalogues change: forget the oldest.
                del self._code_tools[next(iter(self._code_tools))]
            cached = self._code_tools[id(toolset)] = (toolset, CodeTools.of(toolset))
        return cached[1]

    async def toolset(self, ctx: RequestContext) -> Toolset | None:
        if not ctx.plugins:
            return None
        return await self.catalog.toolset(
            ctx.organisation,
            ctx.plugins,
            max_tools=self.router.tool_limit(ctx.model),
            max_tokens=self.config.tool_prompt_budget_tokens,
            can_ask_approval=ctx.can_ask_approval,
        )

    async def run(self, ctx: RequestContext, request: RunRequest, state: RunState) -> AsyncGenerator[Event, None]:
        body = request.body
        if ctx.end_user is None:
            ctx.end_user = end_user_of(body)
        guard = ctx.guardrails
        if guard is not None and ctx.guard_input and guard.applies_to("input"):
            body = {**body, "messages": _guard_messages(guard, state, body["messages"])}
        base = upstream_base(body)
        if request.stream:
            base["stream"] = True
            base["stream_options"] = {"include_usage": True}
        toolset = await self.toolset(ctx)

        if not toolset:
            turn = None
            async for event in self._guarded_round(ctx, state, base, 1, request.stream):
                if isinstance(event, ModelTurn):
                    turn = event
                yield event
            assert turn is not None
            state.stopped_by = "client_tools" if turn.message.get("tool_calls") else "answer"
            yield self._completed(state, turn, [*body["messages"], turn.message])
            return

        state.orchestrated = True
        code = self.code_tools(ctx, request, toolset)
        state.code_mode = code is not None
        state.tool_search = toolset.searchable and code is None
        media_reaching_model = self.router.tool_media(ctx.model)
        yield ToolsOffered(toolset.offered())
        messages = list(body["messages"])
        client_tools: list[JSON] = list(body.get("tools") or [])
        client_names = {(t.get("function") or {}).get("name") for t in client_tools}
        executed: set[tuple[str, str]] = set()
        client_choice = body.get("tool_choice")
        first_round = 1
        if request.resume is not None:
            resumed = request.resume
            calls = resumed.assistant_message.get("tool_calls") or []
            messages.append(_assistant_turn(resumed.assistant_message.get("content"), calls, resumed.assistant_message.get(REASONING_PARTS)))
            executed.update(_call_key(call) for call in calls)
            async for tool_event in self._run_tools(ctx, state, 1, calls, toolset, messages, media_reaching_model, refused=resumed.approvals, code=code):
                yield tool_event
            first_round = 2

        last: ModelTurn | None = None
        final_round = False
        for round_no in range(first_round, self.config.max_tool_rounds + first_round):
            upstream = {**base, "messages": messages, "tools": client_tools + self._offered(toolset, code, state)}
            upstream["tool_choice"] = client_choice if (round_no == 1 and client_choice) else "auto"
            async for event in self._guarded_round(ctx, state, upstream, round_no, request.stream):
                if isinstance(event, ModelTurn):
                    last = event
                yield event
            assert last is not None
            calls = last.message.get("tool_calls") or []
            if not calls:
                state.stopped_by = "answer"
                yield self._completed(state, last, [*messages, last.message])
                return
            keys = [_call_key(call) for call in calls]
            if any(key in executed for key in keys):
                state.stopped_by = "repeated_call"
                final_round = True
                break
            executed.update(keys)
            server_calls = [c for c in calls if (c.get("function") or {}).get("name") not in client_names]
            client_calls = [c for c in calls if (c.get("function") or {}).get("name") in client_names]
            waiting = [c for c in server_calls if _waits_for_approval(c, toolset, code)]
            if waiting:
                state.stopped_by = "approval"
                yield ApprovalRequired(round_no, [self._pending(toolset, c) for c in waiting], last.message)
                # The conversation stops before the waiting turn, which a resumed run appends.
                yield self._completed(state, last, list(messages), finish_reason="tool_calls")
                return
            messages.append(_assistant_turn(last.message.get("content"), calls, last.message.get(REASONING_PARTS)))
            async for tool_event in self._run_tools(ctx, state, round_no, server_calls, toolset, messages, media_reaching_model, code=code):
                yield tool_event
            if client_calls:
                # The client runs its own tools and comes back with their results.
                state.stopped_by = "client_tools"
                answer = {**last.message, "tool_calls": client_calls}
                turn = ModelTurn(last.round, answer, "tool_calls", last.usage, last.response)
                # The conversation ends with the whole turn and the server-side results;
                # the client's own results follow when it comes back.
                yield self._completed(state, turn, list(messages))
                return
        else:
            state.stopped_by = "max_tool_rounds"
            final_round = True

        if final_round:
            upstream = {**base, "messages": messages, "tools": client_tools + self._offered(toolset, code, state), "tool_choice": "none"}
            round_no = (last.round + 1) if last else first_round
            async for event in self._guarded_round(ctx, state, upstream, round_no, request.stream, drop_tool_calls=True):
                if isinstance(event, ModelTurn):
                    last = event
                yield event
            assert last is not None
            yield self._completed(state, last, [*messages, last.message])

    @staticmethod
    def _offered(toolset: Toolset, code: CodeTools | None, state: RunState) -> list[JSON]:
        return code.openai_tools() if code is not None else toolset.openai_tools(state.loaded_tools)

    # -- one upstream round ---------------------------------------------------------

    async def _model_round(
        self,
        ctx: RequestContext,
        state: RunState,
        request: JSON,
        round_no: int,
        stream: bool,
        *,
        drop_tool_calls: bool = False,
    ) -> AsyncGenerator[ModelChunk | ModelTurn, None]:
        state.round_started()
        with telemetry().model_round(ctx.model, request, round_no, stream) as observed:
            if stream:
                accumulator = StreamAccumulator()
                async for chunk in self.router.stream(ctx.model, request, state.route):
                    accumulator.add(chunk)
                    if chunk.get("usage"):
                        state.add_usage(chunk["usage"], prompt=request)
                    if drop_tool_calls:
                        kept = _without_tool_call_deltas(chunk)
                        if kept is None:
                            continue
                        chunk = kept
                    event = ModelChunk(round_no, chunk)
                    state.unbilled_chars += len(event.text)
                    yield event
                state.round_finished()
                message = accumulator.message()
                finish = accumulator.finish_reason
                if drop_tool_calls:
                    message.pop("tool_calls", None)
                    finish = "stop" if finish in (None, "tool_calls") else finish
                turn = ModelTurn(round_no, message, finish, accumulator.usage)
                observed.finished(state.route, turn)
                yield turn
                return
            response = await self.router.chat(ctx.model, request, state.route)
            state.round_finished(response.get("usage"), prompt=request, output=(response.get("choices") or [{}])[0].get("message"))
            if drop_tool_calls:
                _drop_tool_calls(response)
            choice = (response.get("choices") or [{}])[0]
            turn = ModelTurn(round_no, choice.get("message") or {"role": "assistant", "content": None}, choice.get("finish_reason"), response.get("usage"), response)
            observed.finished(state.route, turn)
            yield turn

    def _guarded_round(
        self,
        ctx: RequestContext,
        state: RunState,
        request: JSON,
        round_no: int,
        stream: bool,
        *,
        drop_tool_calls: bool = False,
    ) -> AsyncIterator[ModelChunk | ModelTurn]:
        """One upstream round with the output guardrails applied before anyone sees the text
        (the round's own events when no output guardrail applies: no generator in between)."""
        rounds = self._model_round(ctx, state, request, round_no, stream, drop_tool_calls=drop_tool_calls)
        guard = ctx.guardrails
        if guard is None or not guard.applies_to("output"):
            return rounds
        return self._redacted_round(state, rounds, guard)

    @staticmethod
    async def _redacted_round(
        state: RunState, rounds: AsyncGenerator[ModelChunk | ModelTurn, None], guard: Guardrails
    ) -> AsyncGenerator[ModelChunk | ModelTurn, None]:
        """A round's events through the output guardrails.

        Streamed text goes through a redactor per choice, which holds back only what
        could still become a match; a choice's ``finish_reason`` chunk carries what
        was held. The round's message then holds exactly the text that was sent.
        Reasoning the client is shown (thinking, summaries) is checked too, each part
        whole; a part whose text a guardrail changed is sealed (runtime.reasoning.shown),
        so the model still gets back the part it made.
        """
        redactors: dict[int, StreamRedactor] = {}
        sent: dict[int, str] = {}
        findings: list[Finding] = []
        check = guard.checker("output", findings)
        try:
            async for event in rounds:
                if isinstance(event, ModelChunk):
                    yield ModelChunk(event.round, _redact_chunk(event.chunk, guard, redactors, sent, check))
                    continue
                if (parts := shown_parts(event.message, check)) is not None:
                    event.message[REASONING_PARTS] = parts
                content = event.message.get("content")
                if redactors:
                    event.message["content"] = sent.get(0) or None
                elif isinstance(content, str) and content:
                    checked = guard.check_text(content, "output")
                    findings.extend(checked.findings)
                    if checked.blocked is not None:
                        raise checked.blocked
                    event.message["content"] = checked.text
                yield event
        except GuardrailBlocked as blocked:
            findings.extend(blocked.findings)
            raise guardrail_blocked(blocked.guardrail_key, blocked.findings) from None
        finally:
            for redactor in redactors.values():
                findings.extend(redactor.findings)
            if findings:
                state.guardrail_hits.append(("output", list(dict.fromkeys(findings))))

    # -- tools ----------------------------------------------------------------------

    async def _run_tools(
        self,
        ctx: RequestContext,
        state: RunState,
        round_no: int,
        calls: Sequence[JSON],
        toolset: Toolset,
        messages: list[JSON],
        media_reaching_model: frozenset[str],
        *,
        refused: dict[str, bool] | None = None,
        code: CodeTools | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Run a round's calls concurrently; yield each start, progress and finish as it happens.

        The tool messages are appended to ``messages`` in the calls' order. If the
        consumer stops listening (the client went away), every call still running
        is cancelled. In code mode a script's own tool calls are yielded as they
        happen too, each naming the script run as its ``parent_call_id``.
        """
        if not calls:
            return
        queue: asyncio.Queue[ToolCallStarted | ToolCallFinished | ToolProgress] = asyncio.Queue()
        outcomes: dict[str, ToolCallFinished] = {}
        tasks: list[asyncio.Task[None]] = []

        async def call_tool(call: JSON, call_id: str) -> ToolCallFinished:
            """A plugin tool's call, the same for a model's call and a script's."""

            def progress(done: float, total: float | None, message: str | None) -> None:
                queue.put_nowait(ToolProgress(round_no, call_id, done, total, message))

            sampler = self.sampling(ctx, call_id) if self.sampling is not None else None
            outcome = await run_tool_call(
                call,
                toolset,
                organisation_id=ctx.organisation.id,
                request_id=ctx.request_id,
                round_no=round_no,
                config=self.config,
                on_progress=progress,
                sampler=sampler,
                end_user=ctx.end_user,
            )
            guard = ctx.guardrails
            if guard is not None and guard.applies_to("tool_results"):
                _guard_tool_result(guard, state, outcome)
            return outcome

        def emit(event: Event) -> None:
            if isinstance(event, ToolCallStarted):
                state.tools_started += 1
            queue.put_nowait(event)  # type: ignore[arg-type]

        async def run_one(call: JSON, call_id: str) -> None:
            name = (call.get("function") or {}).get("name")
            if refused is not None and refused.get(call_id) is False:
                outcome = toolset.refusal(call, round_no, REFUSED_BY_CLIENT)
                if code is not None:
                    code.mark(outcome, call)
            elif code is not None and name == TOOL_SEARCH_NAME:
                outcome = code.find(call, round_no)
            elif code is not None and code.is_builtin(name or ""):
                outcome = code.signatures(call, round_no)
            elif code is not None and name == RUN_SCRIPT:
                script = ScriptRun(code, call, call_id, round_no, approved=refused is not None and bool(refused.get(call_id)))
                outcome = await script.run(self.sandbox, self.config, call_tool, emit)
                if ctx.guardrails is not None and ctx.guardrails.applies_to("tool_results"):
                    _guard_tool_result(ctx.guardrails, state, outcome)
            elif toolset.searchable and name == TOOL_SEARCH_NAME:
                outcome = run_tool_search(call, toolset, round_no, state.loaded_tools)
            else:
                outcome = await call_tool(call, call_id)
            queue.put_nowait(outcome)

        started: list[tuple[str, JSON]] = []
        for position, call in enumerate(calls):
            call_id = call.get("id") or f"call_{round_no}_{position}"
            started.append((call_id, call))
            event = toolset.started(call, call_id, round_no)
            if code is not None:
                code.mark(event, call)
            else:
                state.tools_started += 1
            yield event
        state.phase = "tools"
        try:
            for call_id, call in started:
                tasks.append(asyncio.create_task(run_one(call, call_id)))
            while len(outcomes) < len(started):
                item = await queue.get()
                if isinstance(item, ToolCallFinished) and item.parent_call_id is None:
                    outcomes[item.call_id] = item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            state.phase = "idle"
        for call_id, _call in started:
            outcome = outcomes[call_id]
            state.tool_calls.append(outcome.trace())
            messages.append(_tool_message(call_id, outcome, media_reaching_model))

    @staticmethod
    def _pending(toolset: Toolset, call: JSON) -> PendingCall:
        function = call.get("function") or {}
        name = function.get("name") or ""
        bound = toolset.by_name.get(name)
        return PendingCall(
            call_id=call.get("id") or "",
            name=name,
            plugin_id=bound.ref.id if bound else SCRIPT_SERVER if name == RUN_SCRIPT else "",
            tool_name=bound.spec.name if bound else name.removeprefix(f"{SCRIPT_SERVER}__"),
            arguments=function.get("arguments") or "{}",
        )

    @staticmethod
    def _completed(state: RunState, turn: ModelTurn, conversation: list[JSON], *, finish_reason: str | None = None) -> Completed:
        return Completed(
            message=turn.message,
            finish_reason=finish_reason or turn.finish_reason or "stop",
            usage=dict(state.usage),
            trace=state.trace(),
            stopped_by=state.stopped_by or "answer",
            response=turn.response,
            messages=conversation,
        )


def _waits_for_approval(call: JSON, toolset: Toolset, code: CodeTools | None) -> bool:
    if code is not None:
        return code.requires_approval(call)
    return toolset.requires_approval((call.get("function") or {}).get("name") or "")


# The sound formats chat completions' ``input_audio`` takes, by MIME type.
AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}


def _tool_message(call_id: str, outcome: ToolCallFinished, media: frozenset[str]) -> JSON:
    """The tool result as the model reads it: text, with its images and sounds as parts where they reach the model
    (the adapters carry the parts on: see ``runtime.providers.openai.images_after_tool_results``)."""
    parts: list[JSON] = []
    if "image" in media:
        parts.extend({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}} for mime, data in outcome.images)
    if "audio" in media:
        parts.extend(
            {"type": "input_audio", "input_audio": {"data": data, "format": AUDIO_FORMATS[mime]}}
            for mime, data in outcome.audio
            if mime in AUDIO_FORMATS
        )
    if not parts:
        return {"role": "tool", "tool_call_id": call_id, "content": outcome.content}
    return {"role": "tool", "tool_call_id": call_id, "content": [{"type": "text", "text": outcome.content}, *parts]}


def _guard_messages(guard: Guardrails, state: RunState, messages: list[JSON]) -> list[JSON]:
    try:
        checked, findings = guard.check_messages(messages, "input")
    except GuardrailBlocked as blocked:
        state.guardrail_hits.append(("input", blocked.findings))
        raise guardrail_blocked(blocked.guardrail_key, blocked.findings) from None
    if findings:
        state.guardrail_hits.append(("input", findings))
    return checked


def _guard_tool_result(guard: Guardrails, state: RunState, outcome: ToolCallFinished) -> None:
    """Redact a tool's result before the model reads it; a blocked result is withheld from it."""
    checked = guard.check_text(outcome.content, "tool_results")
    if checked.findings:
        state.guardrail_hits.append(("tool_results", checked.findings))
    if checked.blocked is not None:
        kinds = ", ".join(dict.fromkeys(f.message for f in checked.blocked.findings))
        outcome.content = error_content("guardrail_block", f"The result was withheld by guardrail '{checked.blocked.guardrail_key}' ({kinds}).")
        outcome.error = "withheld by guardrail"
        outcome.images = []
        outcome.audio = []
    else:
        outcome.content = checked.text


def _redact_chunk(chunk: JSON, guard: Guardrails, redactors: dict[int, StreamRedactor], sent: dict[int, str], check: Callable[[str], str]) -> JSON:
    choices = chunk.get("choices")
    if not choices:
        return chunk
    out = []
    for choice in choices:
        delta = choice.get("delta") or {}
        if (parts := shown_parts(delta, check)) is not None:
            delta = {**delta, REASONING_PARTS: parts}
            choice = {**choice, "delta": delta}
        text = delta.get("content")
        finish = choice.get("finish_reason")
        if text or finish:
            index = choice.get("index", 0)
            redactor = redactors.get(index)
            if redactor is None:
                redactor = redactors[index] = guard.stream_redactor("output")
            safe = redactor.feed(text) if text else ""
            if finish:
                safe += redactor.finish()
            sent[index] = sent.get(index, "") + safe
            if text is not None or safe:
                choice = {**choice, "delta": {**delta, "content": safe}}
        out.append(choice)
    return {**chunk, "choices": out}


def _assistant_turn(content: str | None, calls: Sequence[JSON], reasoning_parts: Sequence[JSON] | None = None) -> JSON:
    turn: JSON = {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {"id": call.get("id"), "type": "function", "function": call.get("function")} for call in calls
        ],
    }
    if reasoning_parts:
        # The model's reasoning state goes back with its turn on the next round (runtime/reasoning.py).
        turn[REASONING_PARTS] = list(reasoning_parts)
    return turn


def _drop_tool_calls(response: JSON) -> None:
    """A provider may still emit tool calls under ``tool_choice: "none"``; the client never sees them."""
    for choice in response.get("choices") or ():
        message = choice.get("message") or {}
        if message.pop("tool_calls", None) is not None and choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"


def _without_tool_call_deltas(chunk: JSON) -> JSON | None:
    """A streamed chunk of a final round with its tool-call deltas removed (None when nothing is left)."""
    choices = chunk.get("choices")
    if not choices:
        return chunk
    kept = []
    changed = False
    for choice in choices:
        delta = choice.get("delta") or {}
        if "tool_calls" in delta:
            changed = True
            delta = {k: v for k, v in delta.items() if k != "tool_calls"}
            finish = choice.get("finish_reason")
            choice = {**choice, "delta": delta, "finish_reason": "stop" if finish == "tool_calls" else finish}
            if not delta and not choice.get("finish_reason"):
                continue
        elif choice.get("finish_reason") == "tool_calls":
            changed = True
            choice = {**choice, "finish_reason": "stop"}
        kept.append(choice)
    if not changed:
        return chunk
    if not kept and not chunk.get("usage"):
        return None
    return {**chunk, "choices": kept}
