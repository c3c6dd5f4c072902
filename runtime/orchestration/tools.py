"""Tools for one request: resolution, naming, validation and execution.

Rule 4 of DESIGN.md lives here: a round's calls run concurrently, each under
``tool_timeout_s``; failures, timeouts, unknown tools and arguments that fail
the tool's JSON schema become tool results telling the model what went wrong;
results longer than ``max_tool_result_chars`` are cut with a notice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson
import pydantic

from runtime.config import OrchestrationConfig, OrganisationConfig, PluginRef
from runtime.orchestration.naming import public_name
from runtime.plugin_host.manager import PluginHost
from runtime.plugin_host.tool import ToolContext, ToolError, ToolSpec

if TYPE_CHECKING:
    from runtime.mcp import McpManager

log = logging.getLogger("plugway.tools")
JSON = dict[str, Any]


@dataclass
class BoundTool:
    public_name: str
    spec: ToolSpec
    ref: PluginRef
    validator: Any


@dataclass
class Toolset:
    """The tools offered in one request, by the name the model sees."""

    by_name: dict[str, BoundTool] = field(default_factory=dict)
    openai_tools: list[JSON] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_name)


@dataclass
class ToolCallOutcome:
    call_id: str
    name: str
    content: str
    ok: bool
    duration_ms: float
    error: str | None = None

    def trace(self, round_no: int) -> JSON:
        entry: JSON = {"round": round_no, "name": self.name, "duration_ms": round(self.duration_ms, 2), "ok": self.ok}
        if self.error:
            entry["error"] = self.error
        return entry


def _validator_for(schema: JSON) -> Any:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        # A third-party schema we cannot check against must not block the tool.
        return None
    return cls(schema)


class ToolCatalog:
    """Resolves an organisation's eligible plugins to a Toolset, with caching."""

    def __init__(self, plugins: PluginHost, mcp: McpManager | None = None) -> None:
        self.plugins = plugins
        self.mcp = mcp
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[tuple[int, ...], Toolset]] = {}
        self._validators: dict[int, tuple[ToolSpec, Any]] = {}

    def eligible(self, organisation: OrganisationConfig, plugin_ids: Sequence[str] | None) -> list[PluginRef]:
        if plugin_ids is None:
            return list(organisation.plugins)
        wanted = set(plugin_ids)
        return [ref for ref in organisation.plugins if ref.id in wanted]

    async def toolset(self, organisation: OrganisationConfig, plugin_ids: Sequence[str] | None) -> Toolset:
        refs = self.eligible(organisation, plugin_ids)
        specs: list[tuple[PluginRef, ToolSpec]] = []
        for ref in refs:
            if ref.mcp is not None:
                if self.mcp is not None:
                    specs.extend((ref, spec) for spec in await self.mcp.tools_for(ref))
            else:
                specs.extend((ref, spec) for spec in self.plugins.tools(ref.id))
        key = (organisation.id, tuple(ref.id for ref in refs))
        identity = tuple(id(spec) for _, spec in specs)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        toolset = Toolset()
        for ref, spec in specs:
            name = public_name(ref.id, spec.name)
            toolset.by_name[name] = BoundTool(name, spec, ref, self._validator(spec))
            toolset.openai_tools.append(
                {
                    "type": "function",
                    "function": {"name": name, "description": spec.description, "parameters": spec.parameters},
                }
            )
        self._cache[key] = (identity, toolset)
        return toolset

    def _validator(self, spec: ToolSpec) -> Any:
        cached = self._validators.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        validator = _validator_for(spec.parameters)
        self._validators[id(spec)] = (spec, validator)
        return validator


def _error_content(kind: str, message: str) -> str:
    return orjson.dumps({"error": {"type": kind, "message": message}}).decode()


def _serialise(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump_json()
    try:
        return orjson.dumps(result, default=_default).decode()
    except TypeError:
        return str(result)


def _default(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def truncate(content: str, limit: int) -> str:
    if len(content) <= limit:
        return content
    notice = f"\n[plugway: result truncated from {len(content)} to {limit} characters]"
    return content[: max(0, limit - len(notice))] + notice


async def run_tool_call(
    call: JSON,
    toolset: Toolset,
    *,
    organisation_id: str,
    request_id: str,
    config: OrchestrationConfig,
) -> ToolCallOutcome:
    started = time.perf_counter()
    call_id = call.get("id") or ""
    function = call.get("function") or {}
    name = function.get("name") or ""

    def outcome(content: str, ok: bool, error: str | None = None) -> ToolCallOutcome:
        return ToolCallOutcome(
            call_id=call_id,
            name=name,
            content=truncate(content, config.max_tool_result_chars),
            ok=ok,
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,
        )

    bound = toolset.by_name.get(name)
    if bound is None:
        available = ", ".join(sorted(toolset.by_name)) or "none"
        return outcome(_error_content("unknown_tool", f"There is no tool named '{name}'. Available tools: {available}."), False, "unknown tool")

    raw_arguments = function.get("arguments") or "{}"
    try:
        arguments = orjson.loads(raw_arguments)
    except orjson.JSONDecodeError:
        return outcome(_error_content("invalid_arguments", f"Arguments are not valid JSON: {raw_arguments[:200]}"), False, "invalid JSON arguments")
    if not isinstance(arguments, dict):
        return outcome(_error_content("invalid_arguments", "Arguments must be a JSON object."), False, "arguments not an object")
    if bound.validator is not None:
        error = jsonschema.exceptions.best_match(bound.validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            message = f"Arguments do not match the tool's schema at {where}: {error.message}"
            return outcome(_error_content("invalid_arguments", message), False, "schema validation failed")

    ctx = ToolContext(
        organisation_id=organisation_id,
        plugin_id=bound.ref.id,
        request_id=request_id,
        config=bound.ref.config,
        logger=logging.getLogger(f"plugway.plugin.{bound.ref.id}"),
    )
    try:
        async with asyncio.timeout(config.tool_timeout_s):
            result = await bound.spec.invoke(arguments, ctx)
    except TimeoutError:
        return outcome(_error_content("timeout", f"The tool did not finish within {config.tool_timeout_s:g} s."), False, "timeout")
    except ToolError as exc:
        return outcome(_error_content("tool_error", str(exc)), False, str(exc))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        message = f"Invalid arguments: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return outcome(_error_content("invalid_arguments", message), False, "invalid arguments")
    except Exception as exc:
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc, exc_info=True)
        return outcome(_error_content("tool_failed", f"The tool failed: {type(exc).__name__}: {exc}"), False, f"{type(exc).__name__}: {exc}")
    return outcome(_serialise(result), True)


async def run_round(
    calls: list[JSON],
    toolset: Toolset,
    *,
    organisation_id: str,
    request_id: str,
    config: OrchestrationConfig,
) -> list[ToolCallOutcome]:
    """Run one round's calls concurrently; results come back in the calls' order."""
    return list(
        await asyncio.gather(
            *(
                run_tool_call(call, toolset, organisation_id=organisation_id, request_id=request_id, config=config)
                for call in calls
            )
        )
    )
