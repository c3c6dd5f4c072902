"""Code mode: the model writes one short Python script over the tools instead of one round per call.

The model is offered three tools of the gateway's own (:func:`CodeTools.openai_tools`):
``plugway__find_tools`` (the tool search of classic mode, answering with each tool's
Python signature), ``plugway__tool_signatures`` (the typed stubs of chosen tools,
generated from their JSON schemas, descriptions as docstrings) and
``plugway__run_script``. A script runs in Monty (``pydantic-monty``): a Python
interpreter in a pool of worker processes, with no file system, network or
environment, under limits of time, memory, recursion and tool calls. Each eligible
tool is an async function in the script; calling one goes through the loop's own
tool path (the loop passes it in as ``call_tool``), so validation, timeouts, result
caps, guardrails, sampling, progress, usage and the trace are those of a classic call.
What the script prints and its last expression's value are the result the model reads.
"""

from __future__ import annotations

import asyncio
import keyword
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic_monty

from runtime.config import ORCHESTRATION_MODES, CodeModeConfig, OrchestrationConfig
from runtime.errors import invalid_request
from runtime.json_types import JSON
from runtime.orchestration.events import Event, ToolCallFinished, ToolCallStarted
from runtime.orchestration.tools import (
    TOOL_SEARCH_NAME,
    BoundTool,
    Toolset,
    error_content,
    serialise,
)
from runtime.text import truncate

if TYPE_CHECKING:
    from runtime.request import RequestContext

FIND_TOOLS = TOOL_SEARCH_NAME
TOOL_SIGNATURES = "plugway__tool_signatures"
RUN_SCRIPT = "plugway__run_script"
# Where a script run shows as an MCP-shaped call (an approval request, say).
SCRIPT_SERVER = "plugway"
CallTool = Callable[[JSON, str], Coroutine[Any, Any, ToolCallFinished]]
Emit = Callable[[Event], None]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The first sentence of a description, for the one-line index.
_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.S)


# -- which mode ----------------------------------------------------------------------------------


REQUEST_FIELD = "orchestration_mode"


def requested_mode(body: Any, *, field_name: str = REQUEST_FIELD) -> str | None:
    """A request's ``orchestration_mode``, checked: a 400 naming the field when it is not a mode."""
    value = body.get(field_name) if isinstance(body, dict) else None
    if value is not None and value not in ORCHESTRATION_MODES:
        raise invalid_request(f"'{field_name}' must be one of 'classic', 'code' or 'auto'.", param=field_name)
    return value  # type: ignore[no-any-return]


def resolve_mode(requested: str | None, ctx: RequestContext, config: OrchestrationConfig) -> str:
    """The mode asked for: the request's (an endpoint's own setting comes as its request's), else the
    organisation's, else the global one."""
    return requested or ctx.organisation.orchestration.mode or config.mode


def uses_code_mode(mode: str, toolset: Toolset, config: CodeModeConfig) -> bool:
    """``code`` always; ``auto`` when the catalogue needs tool search or has ``auto_min_tools`` or more tools."""
    if mode == "code":
        return True
    if mode == "auto":
        return toolset.searchable or len(toolset.by_name) >= config.auto_min_tools
    return False


# -- Python signatures from JSON schemas ---------------------------------------------------------


def python_name(public_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", public_name)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def annotation(schema: Any) -> str:
    """The Python type a JSON schema describes, as source text."""
    if not isinstance(schema, dict):
        return "Any"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "Literal[" + ", ".join(repr(value) for value in schema["enum"]) + "]"
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return _union(annotation(option) for option in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union(annotation({**schema, "type": one}) for one in kind)
    if kind == "array":
        return f"list[{annotation(schema.get('items'))}]"
    if kind == "object":
        return "dict[str, Any]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}.get(str(kind), "Any")


def _union(parts: Any) -> str:
    unique = list(dict.fromkeys(parts))
    return "Any" if "Any" in unique else " | ".join(unique)


@dataclass(frozen=True, slots=True)
class ScriptFunction:
    """One tool as an async function of a script."""

    name: str  # the Python name
    bound: BoundTool
    parameters: tuple[str, ...]  # in signature order, for positional arguments

    @property
    def properties(self) -> JSON:
        props = self.bound.spec.parameters.get("properties")
        return props if isinstance(props, dict) else {}

    def _parameter_list(self) -> str:
        properties = self.properties
        required = set(self.bound.spec.parameters.get("required") or ())
        if not all(_IDENTIFIER.fullmatch(p) and not keyword.iskeyword(p) for p in properties):
            return "**arguments: Any"
        parts = []
        for name in self.parameters:
            schema = properties.get(name)
            if name in required:
                parts.append(f"{name}: {annotation(schema)}")
            elif isinstance(schema, dict) and "default" in schema:
                parts.append(f"{name}: {annotation(schema)} = {schema['default']!r}")
            else:
                parts.append(f"{name}: {annotation(schema)} | None = None")
        return ", ".join(parts)

    def one_line(self) -> str:
        description = " ".join(self.bound.spec.description.split())
        match = _SENTENCE.match(description)
        summary = match.group(1) if match else description
        if len(summary) > 120:
            summary = summary[:119] + "…"
        return f"async def {self.name}({self._parameter_list()}) -> Any  # {summary}"

    def stub(self) -> str:
        lines = [f"async def {self.name}({self._parameter_list()}) -> Any:", '    """' + (self.bound.spec.description.strip() or self.name)]
        documented = [(name, (self.properties.get(name) or {}).get("description")) for name in self.properties]
        documented = [(name, text) for name, text in documented if text]
        if documented:
            lines += ["", "    Args:"] + [f"        {name}: {' '.join(str(text).split())}" for name, text in documented]
        lines.append('    """')
        return "\n".join(lines)


def script_functions(toolset: Toolset) -> dict[str, ScriptFunction]:
    """Every tool of the toolset by its Python name (distinct even when sanitising makes two alike)."""
    functions: dict[str, ScriptFunction] = {}
    for public, bound in toolset.by_name.items():
        name = python_name(public)
        while name in functions:
            name += "_"
        properties = bound.spec.parameters.get("properties") or {}
        required = [p for p in (bound.spec.parameters.get("required") or ()) if p in properties]
        ordered = tuple(required + [p for p in properties if p not in required])
        functions[name] = ScriptFunction(name, bound, ordered)
    return functions


# -- the tools the model is offered -------------------------------------------------------------

_RUN_SCRIPT_HELP = (
    "Run a short Python script that calls the tools as async functions, instead of calling them one by one. "
    "Use `await f(...)` and `asyncio.gather(...)` for independent calls; loops, conditions and plain Python are fine. "
    "What the script prints and the value of its last expression are this tool's result. "
    "Each function returns the tool's result (parsed JSON when it is JSON, else text); a failed call raises "
    "ValueError (invalid arguments), TimeoutError, PermissionError (not approved or withheld) or RuntimeError. "
    "No files, network, environment or imports beyond the standard modules Monty offers (asyncio, json, re, math, datetime, ...)."
)


@dataclass
class CodeTools:
    """The code-mode face of one request's toolset."""

    toolset: Toolset
    functions: dict[str, ScriptFunction] = field(default_factory=dict)
    _by_public: dict[str, ScriptFunction] = field(default_factory=dict)
    _definitions: list[JSON] = field(default_factory=list)

    @classmethod
    def of(cls, toolset: Toolset) -> CodeTools:
        functions = script_functions(toolset)
        tools = cls(toolset, functions, {f.bound.public_name: f for f in functions.values()})
        tools._definitions = tools._build_definitions()
        return tools

    def _build_definitions(self) -> list[JSON]:
        if self.toolset.searchable:
            index = f"There are {len(self.functions)} functions: find the ones you need with {FIND_TOOLS} first."
        else:
            index = "The functions:\n" + "\n".join(f.one_line() for f in self.functions.values())
        return [
            _function(
                FIND_TOOLS,
                "Find functions for your script by what they do: describe it in a few words. "
                "Returns their names, one-line Python signatures and descriptions.",
                {
                    "query": {"type": "string", "description": "What the functions should do, in a few words."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20, "description": f"How many (default {self.toolset.search_limit})."},
                },
                ["query"],
            ),
            _function(
                TOOL_SIGNATURES,
                "The typed Python signatures of the named functions, with their documentation.",
                {"names": {"type": "array", "items": {"type": "string"}, "description": "Function names."}},
                ["names"],
            ),
            _function(
                RUN_SCRIPT,
                f"{_RUN_SCRIPT_HELP}\n\n{index}",
                {"code": {"type": "string", "description": "The Python script."}},
                ["code"],
            ),
        ]

    def openai_tools(self) -> list[JSON]:
        return self._definitions

    def mark(self, event: ToolCallStarted | ToolCallFinished, call: JSON) -> None:
        """A model's call as code mode shows it: the searches are the gateway's own, a script run carries its script."""
        if event.name in (FIND_TOOLS, TOOL_SIGNATURES):
            event.builtin = True
        elif event.name == RUN_SCRIPT:
            code = _arguments(call.get("function") or {}).get("code")
            event.script = code if isinstance(code, str) else ""

    def is_builtin(self, name: str) -> bool:
        return name in (FIND_TOOLS, TOOL_SIGNATURES)

    def referenced(self, code: str) -> list[ScriptFunction]:
        """The functions a script's text names (a script can call only names it spells out)."""
        words = set(_IDENTIFIER.findall(code))
        return [function for name, function in self.functions.items() if name in words]

    def requires_approval(self, call: JSON) -> bool:
        """A script waits for approval when it names a tool that would wait for it in classic mode."""
        function = call.get("function") or {}
        if function.get("name") != RUN_SCRIPT:
            return False
        code = _arguments(function).get("code")
        if not isinstance(code, str):
            return False
        return any(self.toolset.requires_approval(f.bound.public_name) for f in self.referenced(code))

    def find(self, call: JSON, round_no: int) -> ToolCallFinished:
        started = time.perf_counter()
        arguments = _arguments(call.get("function") or {})
        query = arguments.get("query")
        limit = arguments.get("limit")
        ok = isinstance(query, str) and bool(query.strip())
        if ok:
            found = self.toolset.search(str(query), limit if isinstance(limit, int) and 0 < limit <= 20 else None)
            listed = [self._by_public[b.public_name] for b in found if b.public_name in self._by_public]
            content = orjson.dumps(
                {
                    "functions": [{"name": f.name, "signature": f.one_line()} for f in listed],
                    "note": f"Call them in {RUN_SCRIPT}." if listed else "No function matched; try other words.",
                }
            ).decode()
        else:
            content = error_content("invalid_arguments", "Give 'query': a few words saying what the functions should do.")
        return _builtin_outcome(call, FIND_TOOLS, round_no, ok, content, started)

    def signatures(self, call: JSON, round_no: int) -> ToolCallFinished:
        started = time.perf_counter()
        names = _arguments(call.get("function") or {}).get("names")
        ok = isinstance(names, list) and all(isinstance(n, str) for n in names)
        if isinstance(names, list) and ok:
            known = [self.functions.get(str(n)) or self._by_public.get(str(n)) for n in names]
            missing = [str(n) for n, f in zip(names, known, strict=True) if f is None]
            stubs = [f.stub() for f in known if f is not None]
            if missing:
                stubs.append(f"# Unknown: {', '.join(missing)}. Use {FIND_TOOLS} to find functions.")
            content = "\n\n".join(stubs)
        else:
            content = error_content("invalid_arguments", "Give 'names': an array of function names.")
        return _builtin_outcome(call, TOOL_SIGNATURES, round_no, ok, content, started)


def _function(name: str, description: str, properties: JSON, required: list[str]) -> JSON:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
        },
    }


def _arguments(function: JSON) -> JSON:
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def _builtin_outcome(call: JSON, name: str, round_no: int, ok: bool, content: str, started: float) -> ToolCallFinished:
    return ToolCallFinished(
        round=round_no,
        call_id=call.get("id") or "",
        name=name,
        plugin_id=None,
        tool_name=None,
        arguments=(call.get("function") or {}).get("arguments") or "{}",
        ok=ok,
        content=content,
        duration_ms=(time.perf_counter() - started) * 1000,
        error=None if ok else "invalid arguments",
        builtin=True,
    )


# -- running a script ---------------------------------------------------------------------------

# What a failed call raises in the script, by the error type of its result.
_RAISES = {
    "invalid_arguments": "ValueError",
    "unknown_tool": "NameError",
    "timeout": "TimeoutError",
    "not_approved": "PermissionError",
    "guardrail_block": "PermissionError",
}


class ScriptFailed(Exception):
    """A tool call failed; raised inside the script as ``exc_type``."""


class Sandbox:
    """The pool of Monty worker processes, started on the first script and closed with the gateway."""

    def __init__(self, config: CodeModeConfig) -> None:
        self.config = config
        self._pool: pydantic_monty.AsyncMonty | None = None
        self._starting = asyncio.Lock()

    async def pool(self) -> pydantic_monty.AsyncMonty:
        async with self._starting:
            if self._pool is None:
                pool = pydantic_monty.AsyncMonty(min_processes=1, max_processes=self.config.workers)
                await pool.__aenter__()
                self._pool = pool
            return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.__aexit__(None, None, None)

    def limits(self) -> pydantic_monty.ResourceLimits:
        return {
            "max_feed_duration_secs": self.config.timeout_s,
            "max_memory": self.config.max_memory_mb * 1024 * 1024,
            "max_recursion_depth": self.config.max_recursion_depth,
            # Sleeping does not count as computing: without this a script could sleep for tool_max_s.
            "max_total_sleep_secs": self.config.timeout_s,
            # Every tool call, future and name lookup is a suspension: room for the calls and their lookups.
            "max_suspensions": 4 * self.config.max_tool_calls + 100,
        }


@dataclass
class ScriptRun:
    """One ``plugway__run_script`` call: its script, its tools' calls and their outcomes."""

    tools: CodeTools
    call: JSON
    call_id: str
    round_no: int
    approved: bool = False  # the client approved this script (and so its tools that wait for approval)
    calls: list[ToolCallFinished] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    async def run(self, sandbox: Sandbox, config: OrchestrationConfig, call_tool: CallTool, emit: Emit) -> ToolCallFinished:
        started = time.perf_counter()
        code = _arguments(self.call.get("function") or {}).get("code")
        if not isinstance(code, str) or not code.strip():
            return self._finished(False, error_content("invalid_arguments", "Give 'code': the Python script to run."), started, "invalid arguments")
        running: set[asyncio.Task[ToolCallFinished]] = set()
        made = 0

        def external(function: ScriptFunction) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal made
                made += 1
                if made > config.code_mode.max_tool_calls:
                    raise RuntimeError(f"The script made more than {config.code_mode.max_tool_calls} tool calls.")
                arguments = self._arguments(function, args, kwargs)
                nested_id = f"{self.call_id}-{made}"
                nested: JSON = {
                    "id": nested_id,
                    "type": "function",
                    "function": {"name": function.bound.public_name, "arguments": orjson.dumps(arguments, default=str).decode()},
                }
                emit(self._started(nested, function))
                if self.tools.toolset.requires_approval(function.bound.public_name) and not self.approved:
                    outcome = self.tools.toolset.refusal(nested, self.round_no, "This tool needs a person's approval, and the script was not approved.")
                    outcome.call_id = nested_id
                else:
                    task = asyncio.create_task(call_tool(nested, nested_id))
                    running.add(task)
                    try:
                        outcome = await task
                    finally:
                        running.discard(task)
                outcome.parent_call_id = self.call_id
                self.calls.append(outcome)
                emit(outcome)
                return _returned(outcome)

            return call

        externals = {name: external(function) for name, function in self.tools.functions.items()}
        pool = await sandbox.pool()
        try:
            async with asyncio.timeout(max(config.tool_max_s, config.code_mode.timeout_s)):
                async with pool.checkout(script_name="script.py", limits=sandbox.limits()) as session:
                    value = await session.feed_run(code, external_lookup=externals, print_callback=self._print)
        except pydantic_monty.MontySyntaxError as exc:
            return self._finished(False, self._failure(exc.display()), started, "syntax error")
        except pydantic_monty.MontyRuntimeError as exc:
            return self._finished(False, self._failure(_describe(exc)), started, exc.display("type-msg"))
        except pydantic_monty.MontyError as exc:
            return self._finished(False, self._failure(f"The sandbox failed: {exc}"), started, "sandbox failed")
        except TimeoutError:
            message = f"The script did not finish within {max(config.tool_max_s, config.code_mode.timeout_s):.3g} s."
            return self._finished(False, self._failure(message), started, "timeout")
        finally:
            # A cancelled run (the client went away) must not leave its tools running.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        printed = "".join(self.output)
        if value is None:
            content = printed or "(no output)"
        else:
            content = f"{printed}{serialise(_plain(value))}"
        return self._finished(True, truncate(content, config.max_tool_result_chars), started)

    def _print(self, stream: str, text: str) -> None:
        self.output.append(text)

    def _failure(self, message: str) -> str:
        printed = "".join(self.output)
        if printed:
            message += f"\n\nPrinted before the error:\n{truncate(printed, 4000)}"
        return error_content("script_error", message)

    @staticmethod
    def _arguments(function: ScriptFunction, args: tuple[Any, ...], kwargs: JSON) -> JSON:
        if len(args) > len(function.parameters):
            raise TypeError(f"{function.name}() takes {len(function.parameters)} positional arguments but {len(args)} were given")
        arguments = dict(zip(function.parameters, args, strict=False))
        for name, value in kwargs.items():
            if name in arguments:
                raise TypeError(f"{function.name}() got multiple values for argument '{name}'")
            arguments[name] = value
        # `x=None` for an optional parameter means "not given", as the signature shows it.
        return {name: _plain(value) for name, value in arguments.items() if value is not None or name not in function.parameters}

    def _started(self, nested: JSON, function: ScriptFunction) -> ToolCallStarted:
        started = self.tools.toolset.started(nested, str(nested["id"]), self.round_no)
        started.parent_call_id = self.call_id
        return started

    def _finished(self, ok: bool, content: str, started: float, error: str | None = None) -> ToolCallFinished:
        function = self.call.get("function") or {}
        code = _arguments(function).get("code")
        return ToolCallFinished(
            round=self.round_no,
            call_id=self.call_id,
            name=RUN_SCRIPT,
            plugin_id=None,
            tool_name=None,
            arguments=function.get("arguments") or "{}",
            ok=ok,
            content=content,
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,
            calls=list(self.calls),
            script=code if isinstance(code, str) else None,
            output="".join(self.output),
        )


def _returned(outcome: ToolCallFinished) -> Any:
    """What the script's call returns: the result, as JSON when it is JSON; a failure raises."""
    failed = not outcome.ok or outcome.error is not None
    try:
        value = orjson.loads(outcome.content)
    except orjson.JSONDecodeError:
        value = None
        if not failed:
            return outcome.content
    if failed:
        error = value.get("error") if isinstance(value, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else outcome.content
        raised = {"ValueError": ValueError, "NameError": NameError, "TimeoutError": TimeoutError, "PermissionError": PermissionError}
        raise raised.get(_RAISES.get(str(kind), ""), RuntimeError)(f"{outcome.name}: {message}")
    return value if value is not None else outcome.content


def _describe(exc: pydantic_monty.MontyRuntimeError) -> str:
    """The error with the script's line, and the traceback when there is one."""
    frames = exc.traceback()
    headline = exc.display("type-msg")
    if not frames:
        return f"The script stopped: {headline}"
    last = frames[-1]
    return f"The script failed at line {last.line}: {headline}\n\n{exc.display('traceback')}"


def _plain(value: Any) -> Any:
    """A sandbox value as JSON-friendly Python (tuples, sets and bytes as lists and text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
