"""The demo model in code mode: it writes a script instead of calling tools one by one.

When a request offers ``plugway__run_script``, the demo reads the functions it can
call from the one-line signatures in that tool's description (or, over a large
catalogue, from ``plugway__find_tools``'s answer), plans the same calls it would
make in classic mode, and writes them as one script gathering them concurrently.
Given the script's result, it summarises each function's answer.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import orjson

from runtime.json_types import JSON

Plan = Callable[[str, list[JSON]], list[tuple[str, JSON]]]
Summarise = Callable[[str, str], str]
FIND_TOOLS = "plugway__find_tools"
RUN_SCRIPT = "plugway__run_script"
_JSON_TYPES = (("bool", "boolean"), ("int", "integer"), ("float", "number"), ("str", "string"), ("list", "array"), ("dict", "object"))


def code_mode_turn(messages: list[JSON], tools: list[JSON], user_text: str, *, plan: Plan, summarise: Summarise, label: str) -> tuple[str, list[tuple[str, JSON]]] | None:
    """The demo's answer in code mode (text, calls), or None when the request is not in code mode."""
    offered = {(t.get("function") or {}).get("name"): t.get("function") or {} for t in tools}
    if RUN_SCRIPT not in offered:
        return None
    answered = _answered_call(messages)
    if answered is not None:
        name, content = answered
        if name == RUN_SCRIPT:
            return f"{label} " + _summary(content, summarise), []
        if name == FIND_TOOLS:
            found = _parse_json(content)
            lines = [f.get("signature", "") for f in (found or {}).get("functions") or () if isinstance(f, dict)]
            return _script_turn(user_text, _functions(lines), plan, label)
    description = str(offered[RUN_SCRIPT].get("description") or "")
    functions = _functions(description.splitlines())
    if not functions and FIND_TOOLS in offered:
        return "", [(FIND_TOOLS, {"query": user_text.strip()[:200]})]
    return _script_turn(user_text, functions, plan, label)


def write_script(calls: list[tuple[str, JSON]]) -> str:
    """One script running ``calls`` concurrently and answering with each one's result by name."""
    invocations = ",\n    ".join(f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})" for name, arguments in calls)
    names = [name for name, _ in calls]
    return f"import asyncio\n\nresults = await asyncio.gather(\n    {invocations},\n)\ndict(zip({names!r}, results))\n"


def _script_turn(user_text: str, functions: list[JSON], plan: Plan, label: str) -> tuple[str, list[tuple[str, JSON]]]:
    calls = plan(user_text, functions)
    if not calls:
        return f"{label} I found no function for that here. Ask me for the time somewhere or a calculation such as 'what is 17 * 23?'.", []
    return "", [(RUN_SCRIPT, {"code": write_script(calls)})]


def _answered_call(messages: list[JSON]) -> tuple[str, str] | None:
    """The gateway tool the last tool message answers, and its content."""
    if not messages or messages[-1].get("role") != "tool":
        return None
    call_id = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                if call.get("id") == call_id:
                    content = messages[-1].get("content")
                    return (call.get("function") or {}).get("name") or "", content if isinstance(content, str) else ""
            return None
    return None


def _functions(lines: list[str]) -> list[JSON]:
    """Function definitions (OpenAI shape) from ``async def name(a: str, b: int = 1) -> Any`` lines."""
    functions = []
    for line in lines:
        line = line.strip()
        if not line.startswith("async def "):
            continue
        source = line.split("  #", 1)[0].rstrip(":") + ": ..."
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        definition = tree.body[0]
        if not isinstance(definition, ast.AsyncFunctionDef):
            continue
        arguments = definition.args.args
        first_default = len(arguments) - len(definition.args.defaults)
        properties = {arg.arg: {"type": _json_type(ast.unparse(arg.annotation) if arg.annotation else "")} for arg in arguments}
        required = [arg.arg for i, arg in enumerate(arguments) if i < first_default]
        functions.append({"type": "function", "function": {"name": definition.name, "parameters": {"type": "object", "properties": properties, "required": required}}})
    return functions


def _json_type(annotation: str) -> str:
    for python, json_type in _JSON_TYPES:
        if annotation.startswith(python):
            return json_type
    return "string"


def _parse_json(content: str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _summary(content: str, summarise: Summarise) -> str:
    data = _parse_json(content)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return f"The script failed: {data['error'].get('message')}"
    if not isinstance(data, dict):
        return f"The script printed: {content[:400]}"
    return " ".join(summarise(name, orjson.dumps(value).decode() if not isinstance(value, str) else value) for name, value in data.items())
