"""Tools for one request: resolution, naming, validation and execution.

Rule 4 of DESIGN.md lives here: a round's calls run concurrently (the loop
starts them), each under ``tool_timeout_s``; failures, timeouts, unknown tools
and arguments that fail the tool's JSON schema become tool results telling the
model what went wrong; results longer than ``max_tool_result_chars`` are cut
with a notice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson
import pydantic

from runtime.config import OrchestrationConfig, OrganisationConfig, PluginRef
from runtime.orchestration.events import OfferedTool, ToolCallFinished, ToolCallStarted
from runtime.orchestration.naming import public_name
from runtime.plugin_host.manager import PluginHost
from runtime.plugin_host.tool import ToolContext, ToolError, ToolSpec
from runtime.text import truncate

if TYPE_CHECKING:
    from runtime.admission import PluginGrant, RequestContext
    from runtime.mcp import McpManager

log = logging.getLogger("plugway.tools")
JSON = dict[str, Any]
ProgressCallback = Callable[[float, float | None, str | None], None]


@dataclass
class BoundTool:
    public_name: str
    spec: ToolSpec
    ref: PluginRef
    validator: Any
    grant: PluginGrant


@dataclass
class Toolset:
    """The server-side tools offered in one request, by the name the model sees."""

    by_name: dict[str, BoundTool] = field(default_factory=dict)
    _openai: list[JSON] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def add(self, bound: BoundTool) -> None:
        self.by_name[bound.public_name] = bound
        self._openai.append(
            {
                "type": "function",
                "function": {"name": bound.public_name, "description": bound.spec.description, "parameters": bound.spec.parameters},
            }
        )

    def openai_tools(self) -> list[JSON]:
        return self._openai

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
        return bound is not None and bound.grant.approval.required(bound.spec.name)

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


def _validator_for(schema: JSON) -> Any:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        # A third-party schema we cannot check against must not block the tool.
        return None
    return cls(schema)


def _tool_allowed(ref: PluginRef, grant: PluginGrant, tool_name: str) -> bool:
    if ref.allowed_tools is not None and tool_name not in ref.allowed_tools:
        return False
    if tool_name in ref.exclude_tools:
        return False
    return grant.allowed_tools is None or tool_name in grant.allowed_tools


class ToolCatalog:
    """Resolves a request's plugin grants to a Toolset, with caching."""

    def __init__(self, plugins: PluginHost, mcp: McpManager | None = None) -> None:
        self.plugins = plugins
        self.mcp = mcp
        self._cache: dict[tuple[Any, ...], tuple[tuple[int, ...], Toolset]] = {}
        self._validators: dict[int, tuple[ToolSpec, Any]] = {}

    async def specs(self, ref: PluginRef) -> list[ToolSpec]:
        """Every tool a plugin offers now (an MCP server's may change)."""
        if ref.mcp is not None:
            return await self.mcp.tools_for(ref) if self.mcp is not None else []
        return self.plugins.tools(ref.id)

    async def toolset(self, organisation: OrganisationConfig, grants: Sequence[PluginGrant]) -> Toolset:
        specs: list[tuple[PluginGrant, ToolSpec]] = []
        for grant in grants:
            for spec in await self.specs(grant.ref):
                if _tool_allowed(grant.ref, grant, spec.name):
                    specs.append((grant, spec))
        key = (organisation.id, tuple(grant.cache_key for grant in grants))
        identity = tuple(id(spec) for _, spec in specs)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        toolset = Toolset()
        for grant, spec in specs:
            name = public_name(grant.ref.id, spec.name)
            toolset.add(BoundTool(name, spec, grant.ref, self._validator(spec), grant))
        self._cache[key] = (identity, toolset)
        return toolset

    def _validator(self, spec: ToolSpec) -> Any:
        cached = self._validators.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        validator = _validator_for(spec.parameters)
        self._validators[id(spec)] = (spec, validator)
        return validator


def error_content(kind: str, message: str) -> str:
    return orjson.dumps({"error": {"type": kind, "message": message}}).decode()


def serialise(result: Any) -> str:
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


async def run_tool_call(
    call: JSON,
    toolset: Toolset,
    *,
    ctx: RequestContext,
    round_no: int,
    config: OrchestrationConfig,
    on_progress: ProgressCallback | None = None,
) -> ToolCallFinished:
    """Run one call the model made; every failure becomes a result the model can read."""
    started = time.perf_counter()
    call_id = call.get("id") or ""
    function = call.get("function") or {}
    name = function.get("name") or ""
    raw_arguments = function.get("arguments") or "{}"
    bound = toolset.by_name.get(name)

    def outcome(content: str, ok: bool, error: str | None = None) -> ToolCallFinished:
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
        )

    if bound is None:
        available = ", ".join(sorted(toolset.by_name)) or "none"
        return outcome(error_content("unknown_tool", f"There is no tool named '{name}'. Available tools: {available}."), False, "unknown tool")

    try:
        arguments = orjson.loads(raw_arguments)
    except orjson.JSONDecodeError:
        return outcome(error_content("invalid_arguments", f"Arguments are not valid JSON: {raw_arguments[:200]}"), False, "invalid JSON arguments")
    if not isinstance(arguments, dict):
        return outcome(error_content("invalid_arguments", "Arguments must be a JSON object."), False, "arguments not an object")
    if bound.validator is not None:
        error = jsonschema.exceptions.best_match(bound.validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            message = f"Arguments do not match the tool's schema at {where}: {error.message}"
            return outcome(error_content("invalid_arguments", message), False, "schema validation failed")

    tool_ctx = ToolContext(
        organisation_id=ctx.organisation.id,
        plugin_id=bound.ref.id,
        request_id=ctx.request_id,
        config=bound.ref.config,
        logger=logging.getLogger(f"plugway.plugin.{bound.ref.id}"),
    )
    try:
        async with asyncio.timeout(config.tool_timeout_s):
            result = await bound.spec.invoke(arguments, tool_ctx)
    except TimeoutError:
        return outcome(error_content("timeout", f"The tool did not finish within {config.tool_timeout_s:g} s."), False, "timeout")
    except ToolError as exc:
        return outcome(error_content("tool_error", str(exc)), False, str(exc))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        message = f"Invalid arguments: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return outcome(error_content("invalid_arguments", message), False, "invalid arguments")
    except Exception as exc:
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc, exc_info=True)
        return outcome(error_content("tool_failed", f"The tool failed: {type(exc).__name__}: {exc}"), False, f"{type(exc).__name__}: {exc}")
    return outcome(serialise(result), True)
