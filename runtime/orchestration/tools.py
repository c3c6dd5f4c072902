"""Tools for one request: resolution, naming, validation and execution.

Rule 4 of DESIGN.md lives here: a round's calls run concurrently (the loop
starts them), each under ``tool_timeout_s``; failures, timeouts, unknown tools
and arguments that fail the tool's JSON schema become tool results telling the
model what went wrong; results longer than ``max_tool_result_chars`` are cut
with a notice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import pydantic

from runtime.config import OrchestrationConfig, OrganisationConfig, PluginRef
from runtime.json_schema import checked_validator_for, mismatch
from runtime.json_types import JSON
from runtime.limits.reservation import estimated_tokens as estimate_tokens
from runtime.orchestration.events import OfferedTool, ToolCallFinished, ToolCallStarted
from runtime.orchestration.naming import public_name
from runtime.plugin_host.manager import PluginHost
from runtime.plugin_host.tool import (
    Elicitor,
    Sampler,
    SamplingRequest,
    SamplingResult,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSpec,
    UrlPrompt,
)
from runtime.request import PluginGrant
from runtime.telemetry import current as telemetry
from runtime.text import truncate

log = logging.getLogger("plugway.tools")
ProgressCallback = Callable[[float, float | None, str | None], None]


@dataclass
class BoundTool:
    public_name: str
    spec: ToolSpec
    ref: PluginRef
    validator: Any
    grant: PluginGrant
    # The organisation requires a person's approval before this tool runs.
    needs_approval: bool = False


def is_destructive(spec: ToolSpec) -> bool:
    """Whether a tool may change or delete things, read as MCP's annotation defaults say.

    Without annotations a tool counts as destructive: ``readOnlyHint`` defaults to
    false and ``destructiveHint`` to true.
    """
    annotations = spec.annotations or {}
    if annotations.get("readOnlyHint") is True:
        return False
    return annotations.get("destructiveHint") is not False


def organisation_requires_approval(ref: PluginRef, spec: ToolSpec) -> bool:
    if ref.require_approval == "always":
        return True
    return ref.require_approval == "destructive" and is_destructive(spec)


TOOL_SEARCH_NAME = "plugway__find_tools"
_TOOL_SEARCH_DESCRIPTION = (
    "Find tools for the task at hand. More tools are available than can be listed here: "
    "describe what you need in a few words, and the best matching tools become callable "
    "in your next step. Returns their names and descriptions."
)
_WORDS = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORDS.findall(text)}


def estimated_tokens(tool: JSON) -> int:
    """Prompt tokens a tool definition costs (plugway's estimate, and one for its framing)."""
    return estimate_tokens(len(orjson.dumps(tool))) + 1


@dataclass
class Toolset:
    """The server-side tools of one request, by the name the model sees.

    When the catalogue is larger than the provider accepts (or than the prompt
    budget), ``searchable`` is set: the model is offered :data:`TOOL_SEARCH_NAME`
    instead, and the tools it finds are added to what it is offered next.
    """

    by_name: dict[str, BoundTool] = field(default_factory=dict)
    _openai: list[JSON] = field(default_factory=list)
    _definitions: dict[str, JSON] = field(default_factory=dict)
    searchable: bool = False
    search_limit: int = 8

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def add(self, bound: BoundTool) -> None:
        self.by_name[bound.public_name] = bound
        definition = {
            "type": "function",
            "function": {"name": bound.public_name, "description": bound.spec.description, "parameters": bound.spec.parameters},
        }
        self._openai.append(definition)
        self._definitions[bound.public_name] = definition

    def openai_tools(self, loaded: Collection[str] = ()) -> list[JSON]:
        if not self.searchable:
            return self._openai
        return [_search_tool_definition(self.search_limit), *(self._definitions[name] for name in loaded if name in self._definitions)]

    def catalogue_tokens(self) -> int:
        return sum(estimated_tokens(tool) for tool in self._openai)

    def search(self, query: str, limit: int | None = None) -> list[BoundTool]:
        """The tools best matching ``query`` by the words of their names (weighted) and descriptions."""
        wanted = _words(query)
        scored: list[tuple[int, str]] = []
        for name, bound in self.by_name.items():
            in_name = _words(bound.spec.name) | _words(bound.ref.id)
            in_description = _words(bound.spec.description)
            score = 3 * len(wanted & in_name) + len(wanted & in_description)
            if score:
                scored.append((-score, name))
        scored.sort()
        return [self.by_name[name] for _, name in scored[: limit or self.search_limit]]

    def offered(self) -> list[OfferedTool]:
        return [
            OfferedTool(
                plugin_id=bound.ref.id,
                tool_name=bound.spec.name,
                public_name=name,
                description=bound.spec.description,
                parameters=bound.spec.parameters,
                annotations=bound.spec.annotations,
            )
            for name, bound in self.by_name.items()
        ]

    def requires_approval(self, name: str) -> bool:
        bound = self.by_name.get(name)
        return bound is not None and (bound.needs_approval or bound.grant.approval.required(bound.spec.name))

    def started(self, call: JSON, call_id: str, round_no: int) -> ToolCallStarted:
        function = call.get("function") or {}
        name = function.get("name") or ""
        bound = self.by_name.get(name)
        return ToolCallStarted(
            round=round_no,
            call_id=call_id,
            name=name,
            plugin_id=bound.ref.id if bound else None,
            tool_name=bound.spec.name if bound else None,
            arguments=function.get("arguments") or "{}",
            builtin=name == TOOL_SEARCH_NAME and self.searchable,
        )

    def refusal(self, call: JSON, round_no: int, message: str) -> ToolCallFinished:
        started = self.started(call, call.get("id") or "", round_no)
        return ToolCallFinished(
            round=round_no,
            call_id=started.call_id,
            name=started.name,
            plugin_id=started.plugin_id,
            tool_name=started.tool_name,
            arguments=started.arguments,
            ok=False,
            content=error_content("not_approved", message),
            duration_ms=0.0,
            error="not approved",
        )


def _search_tool_definition(limit: int) -> JSON:
    return {
        "type": "function",
        "function": {
            "name": TOOL_SEARCH_NAME,
            "description": _TOOL_SEARCH_DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What the tools should do, in a few words."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20, "description": f"How many tools (default {limit})."},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    }


def _tool_allowed(ref: PluginRef, grant: PluginGrant, tool_name: str) -> bool:
    if ref.allowed_tools is not None and tool_name not in ref.allowed_tools:
        return False
    if tool_name in ref.exclude_tools:
        return False
    return grant.allowed_tools is None or tool_name in grant.allowed_tools


class McpTools(Protocol):
    """What the catalogue needs from the MCP client (``runtime.mcp.McpManager``)."""

    async def tools_for(self, ref: PluginRef, *, organisation: str) -> list[ToolSpec]: ...


class ToolCatalog:
    """Resolves a request's plugin grants to a Toolset, with caching."""

    def __init__(self, plugins: PluginHost, mcp: McpTools | None = None) -> None:
        self.plugins = plugins
        self.mcp = mcp
        self._cache: dict[tuple[Any, ...], tuple[tuple[int, ...], Toolset]] = {}
        self._validators: dict[int, tuple[ToolSpec, Any]] = {}

    async def specs(self, ref: PluginRef, organisation_id: str) -> list[ToolSpec]:
        """Every tool a plugin offers the organisation now (an MCP server's may change)."""
        if ref.mcp is not None:
            return await self.mcp.tools_for(ref, organisation=organisation_id) if self.mcp is not None else []
        return self.plugins.tools(ref.id)

    async def toolset(
        self,
        organisation: OrganisationConfig,
        grants: Sequence[PluginGrant],
        *,
        max_tools: int | None = None,
        max_tokens: int | None = None,
        can_ask_approval: bool = True,
    ) -> Toolset:
        """The grants' tools; searchable when more than ``max_tools`` or ``max_tokens`` of definitions.

        Without ``can_ask_approval`` (a front door with no way to ask a person), the tools
        the organisation wants approved before they run are left out.
        """
        specs: list[tuple[PluginGrant, ToolSpec]] = []
        for grant in grants:
            for spec in await self.specs(grant.ref, organisation.id):
                if not _tool_allowed(grant.ref, grant, spec.name):
                    continue
                if not can_ask_approval and organisation_requires_approval(grant.ref, spec):
                    continue
                specs.append((grant, spec))
        key = (organisation.id, tuple(grant.cache_key for grant in grants), max_tools, max_tokens, can_ask_approval)
        identity = tuple(id(spec) for _, spec in specs)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        toolset = Toolset()
        for grant, spec in specs:
            name = public_name(grant.ref.id, spec.name)
            needs_approval = organisation_requires_approval(grant.ref, spec)
            toolset.add(BoundTool(name, spec, grant.ref, self._validator(spec), grant, needs_approval))
        too_many = max_tools is not None and len(toolset.by_name) > max_tools
        too_long = max_tokens is not None and toolset.catalogue_tokens() > max_tokens
        toolset.searchable = too_many or too_long
        self._cache[key] = (identity, toolset)
        return toolset

    def _validator(self, spec: ToolSpec) -> Any:
        cached = self._validators.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        validator = checked_validator_for(spec.parameters)  # a third party's bad schema must not block its tool
        self._validators[id(spec)] = (spec, validator)
        return validator


def error_content(kind: str, message: str) -> str:
    return orjson.dumps({"error": {"type": kind, "message": message}}).decode()


def error_of(content: str) -> tuple[str, str] | None:
    """The (kind, message) of a failed call's content, as ``run_tool_call`` writes it."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str):
        return error["type"], error["message"]
    return None


def outcome_status(finished: ToolCallFinished) -> str:
    """The usage record's status: ok, tool_error, tool_failed, invalid_arguments or timeout."""
    if finished.ok:
        return "ok"
    error = error_of(finished.content)
    return error[0] if error is not None else "tool_error"


def serialise(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump_json()
    try:
        return orjson.dumps(result, default=_default).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits; the standard library writes them.
        try:
            return json.dumps(result, default=_default, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(result)


def _default(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# Images larger than this go to the model as a description only (Anthropic's own per-image cap).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
# Sounds larger than this are described only (a minute or two of speech fits).
MAX_AUDIO_BYTES = 10 * 1024 * 1024


def _result_content(result: Any, limit: int) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """What the model reads, and the images and sounds that may go along with it."""
    if not isinstance(result, ToolResult):
        return truncate(serialise(result), limit), [], []
    descriptions = [*(image.describe() for image in result.images), *(sound.describe() for sound in result.audio)]
    text = "\n".join([result.text, *descriptions]) if result.text else "\n".join(descriptions)
    images = [(image.mime_type, image.data) for image in result.images if image.size <= MAX_IMAGE_BYTES]
    sounds = [(sound.mime_type, sound.data) for sound in result.audio if sound.size <= MAX_AUDIO_BYTES]
    return truncate(text or "(no output)", limit), images, sounds


async def run_tool_call(
    call: JSON,
    toolset: Toolset,
    *,
    organisation_id: str,
    request_id: str,
    round_no: int,
    config: OrchestrationConfig,
    on_progress: ProgressCallback | None = None,
    sampler: Sampler | None = None,
    elicitor: Elicitor | None = None,
    end_user: str | None = None,
    ask_user_to_open: UrlPrompt | None = None,
) -> ToolCallFinished:
    """Run one call the model made (see :func:`_execute_tool_call`), under its span, counted in the metrics."""
    execution = _execute_tool_call(
        call,
        toolset,
        organisation_id=organisation_id,
        request_id=request_id,
        round_no=round_no,
        config=config,
        on_progress=on_progress,
        sampler=sampler,
        elicitor=elicitor,
        end_user=end_user,
        ask_user_to_open=ask_user_to_open,
    )
    function = call.get("function") or {}
    name = function.get("name") or ""
    bound = toolset.by_name.get(name)
    return await telemetry().observe_tool(
        execution,
        call_id=call.get("id") or "",
        # A name the model made up is free text: never a label.
        tool=name if bound is not None else "unknown",
        plugin=bound.ref.id if bound is not None else "unknown",
        arguments=function.get("arguments") or "{}",
        organisation_id=organisation_id,
        name=name,
    )


async def _execute_tool_call(
    call: JSON,
    toolset: Toolset,
    *,
    organisation_id: str,
    request_id: str,
    round_no: int,
    config: OrchestrationConfig,
    on_progress: ProgressCallback | None = None,
    sampler: Sampler | None = None,
    elicitor: Elicitor | None = None,
    end_user: str | None = None,
    ask_user_to_open: UrlPrompt | None = None,
) -> ToolCallFinished:
    """Run one call the model made; every failure becomes a result the model can read.

    The call has ``tool_timeout_s``; each progress report it makes moves its
    deadline to ``tool_timeout_s`` from then, but never beyond ``tool_max_s``
    after it started.
    """
    started = time.perf_counter()
    call_id = call.get("id") or ""
    function = call.get("function") or {}
    name = function.get("name") or ""
    raw_arguments = function.get("arguments") or "{}"
    bound = toolset.by_name.get(name)

    def outcome(
        content: str,
        ok: bool,
        error: str | None = None,
        images: list[tuple[str, str]] | None = None,
        audio: list[tuple[str, str]] | None = None,
    ) -> ToolCallFinished:
        return ToolCallFinished(
            round=round_no,
            call_id=call_id,
            name=name,
            plugin_id=bound.ref.id if bound else None,
            tool_name=bound.spec.name if bound else None,
            arguments=raw_arguments,
            ok=ok,
            content=truncate(content, config.max_tool_result_chars),
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,
            images=images or [],
            audio=audio or [],
        )

    if bound is None:
        available = ", ".join(sorted(toolset.by_name)) if not toolset.searchable else f"use {TOOL_SEARCH_NAME} to find them"
        return outcome(error_content("unknown_tool", f"There is no tool named '{name}'. Available tools: {available or 'none'}."), False, "unknown tool")

    try:
        arguments = orjson.loads(raw_arguments)
    except orjson.JSONDecodeError:
        return outcome(error_content("invalid_arguments", f"Arguments are not valid JSON: {raw_arguments[:200]}"), False, "invalid JSON arguments")
    if not isinstance(arguments, dict):
        return outcome(error_content("invalid_arguments", "Arguments must be a JSON object."), False, "arguments not an object")
    if bound.validator is not None:
        wrong = mismatch(bound.validator, arguments)
        if wrong is not None:
            message = f"Arguments do not match the tool's schema {wrong}"
            return outcome(error_content("invalid_arguments", message), False, "schema validation failed")

    loop = asyncio.get_running_loop()
    limit = config.tool_timeout_s
    ceiling = loop.time() + max(config.tool_max_s, limit)
    try:
        async with asyncio.timeout(limit) as deadline:

            def progress(done: float, total: float | None, message: str | None) -> None:
                deadline.reschedule(min(loop.time() + limit, ceiling))
                if on_progress is not None:
                    on_progress(done, total, message)

            sample: Sampler | None = None
            if sampler is not None:
                model_sampler = sampler

                async def sample(request: SamplingRequest) -> SamplingResult:
                    # The model's time is not the tool's: it may run to tool_max_s, and the
                    # tool gets tool_timeout_s again from the answer.
                    deadline.reschedule(ceiling)
                    try:
                        return await model_sampler(request)
                    finally:
                        deadline.reschedule(min(loop.time() + limit, ceiling))

            elicit: Elicitor | None = None
            if elicitor is not None:
                person = elicitor

                async def elicit(params: dict[str, Any]) -> dict[str, Any]:
                    # A person's time is not the tool's either (as with sampling).
                    deadline.reschedule(ceiling)
                    try:
                        return await person(params)
                    finally:
                        deadline.reschedule(min(loop.time() + limit, ceiling))

            open_link: UrlPrompt | None = None
            if ask_user_to_open is not None:
                prompt = ask_user_to_open

                async def open_link(message: str, url: str) -> bool:
                    # Nor is the time the person takes to open a link (an authorization, say).
                    deadline.reschedule(ceiling)
                    try:
                        return await prompt(message, url)
                    finally:
                        deadline.reschedule(min(loop.time() + limit, ceiling))

            tool_ctx = ToolContext(
                organisation_id=organisation_id,
                plugin_id=bound.ref.id,
                request_id=request_id,
                config=bound.ref.config,
                logger=logging.getLogger(f"plugway.plugin.{bound.ref.id}"),
                progress=progress,
                sample=sample,
                elicit=elicit,
                end_user=end_user,
                ask_user_to_open=open_link,
            )
            result = await bound.spec.invoke(arguments, tool_ctx)
    except TimeoutError as exc:
        if not deadline.expired():
            # The tool's own code timed out (a request it made, say): its error, not ours.
            return outcome(error_content("tool_failed", f"The tool failed: {exc or 'a timeout inside the tool'}"), False, "TimeoutError inside the tool")
        waited = time.perf_counter() - started
        return outcome(error_content("timeout", f"The tool did not finish within {max(limit, waited):.3g} s."), False, "timeout")
    except ToolError as exc:
        return outcome(error_content("tool_error", str(exc)), False, str(exc))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        message = f"Invalid arguments: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return outcome(error_content("invalid_arguments", message), False, "invalid arguments")
    except Exception as exc:
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc, exc_info=True)
        return outcome(error_content("tool_failed", f"The tool failed: {type(exc).__name__}: {exc}"), False, f"{type(exc).__name__}: {exc}")
    content, images, sounds = _result_content(result, config.max_tool_result_chars)
    return outcome(content, True, images=images, audio=sounds)


def run_tool_search(call: JSON, toolset: Toolset, round_no: int, loaded: list[str]) -> ToolCallFinished:
    """The gateway's own tool search: the tools found are added to ``loaded`` for the next round."""
    started = time.perf_counter()
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        arguments = orjson.loads(raw)
    except orjson.JSONDecodeError:
        arguments = None
    query = arguments.get("query") if isinstance(arguments, dict) else None
    limit = arguments.get("limit") if isinstance(arguments, dict) else None
    ok = isinstance(query, str) and bool(query.strip())
    if ok:
        found = toolset.search(str(query), limit if isinstance(limit, int) and 0 < limit <= 20 else None)
        for bound in found:
            if bound.public_name not in loaded:
                loaded.append(bound.public_name)
        content = orjson.dumps(
            {
                "tools": [{"name": b.public_name, "description": b.spec.description} for b in found],
                "note": "These tools can now be called." if found else "No tool matched; try other words.",
            }
        ).decode()
    else:
        content = error_content("invalid_arguments", "Give 'query': a few words saying what the tool should do.")
    return ToolCallFinished(
        round=round_no,
        call_id=call.get("id") or "",
        name=TOOL_SEARCH_NAME,
        plugin_id=None,
        tool_name=None,
        arguments=raw,
        ok=ok,
        content=content,
        duration_ms=(time.perf_counter() - started) * 1000,
        error=None if ok else "invalid arguments",
        builtin=True,
    )
