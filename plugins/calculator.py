"""Calculator: safe arithmetic over a parsed expression tree, never ``eval``.

Every step is bounded *before* it runs, so no expression of at most 500
characters takes more than microseconds: literals, intermediate values and
results stay finite and within ``±1e300`` (``1e309`` is refused, not turned into
``inf``); a power is refused when its exponent is above 1000 or its result
would exceed that magnitude; ``round``'s digits are at most 300 either way
(``round(1, -10**8)`` once meant building a 100-million-digit number).

The evaluation itself runs in an isolated worker process
(:mod:`runtime.plugin_host.isolation`), as the guarantee behind those bounds:
whatever slips past them is still stopped by ``tool_timeout_s`` (or by this
tool's own limit) and never runs on the event loop.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from runtime import ToolError, hookimpl
from runtime.plugin_host.isolation import run_isolated

Number = int | float

MAX_EXPRESSION = 500
MAX_MAGNITUDE = 1e300
MAX_EXPONENT = 1000
MAX_ROUND_DIGITS = 300
EVALUATION_TIMEOUT_S = 5.0
_LOG10_MAX_MAGNITUDE = math.log10(MAX_MAGNITUDE)
_INT64_MAX = 2**63 - 1

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int):
        raise ToolError("round's digits must be a whole number")
    if abs(digits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round's digits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
    return round(value, digits)


def _power(base: Number, exponent: Number) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
    if base != 0 and abs(base) != 1 and exponent * math.log10(abs(base)) > _LOG10_MAX_MAGNITUDE:
        raise ToolError("result is out of range")
    return base**exponent


# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "sqrt": (math.sqrt, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1), "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1), "exp": (math.exp, 1, 1), "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1), "tan": (math.tan, 1, 1), "min": (min, 2, 20), "max": (max, 2, 20),
}


def _bounded(value: Any) -> Number:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_MAGNITUDE:
        raise ToolError("result is out of range")
    return value  # type: ignore[no-any-return]


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        number: Number = node.value  # type: ignore[assignment]
        if (isinstance(number, float) and not math.isfinite(number)) or abs(number) > MAX_MAGNITUDE:
            raise ToolError(f"a number in the expression is too large (beyond ±{MAX_MAGNITUDE:g})")
        return number
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _bounded(_power(_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _bounded(_BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ToolError("keyword arguments are not supported")
        function, fewest, most = _FUNCTIONS[node.func.id]
        if not fewest <= len(node.args) <= most:
            expected = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise ToolError(f"{node.func.id} takes {expected} argument{'s' if most > 1 else ''}, not {len(node.args)}")
        return _bounded(function(*(_evaluate(arg) for arg in node.args)))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    raise ToolError(f"unsupported element in expression: {ast.dump(node)[:60]}")


def evaluate_expression(text: str) -> Number:
    """The value of an arithmetic expression (run in an isolated worker: pure and picklable)."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise ToolError(f"cannot parse '{text}'") from None
    except (RecursionError, MemoryError):
        raise ToolError("the expression is nested too deeply") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result is out of range") from None
    except RecursionError:
        raise ToolError("the expression is nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


async def evaluate(expression: str) -> dict[str, Any]:
    """Evaluate an arithmetic expression: + - * / // % ** and parentheses, sqrt, abs, round, floor, ceil, log, log10, exp, sin, cos, tan, min, max, pi, e."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolError("expression is empty")
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    value = await run_isolated(evaluate_expression, text, timeout_s=EVALUATION_TIMEOUT_S)
    result: dict[str, Any] = {"expression": expression, "result": value}
    if isinstance(value, int) and abs(value) > _INT64_MAX:
        # JSON readers (the gateway's included) stop at 64-bit integers: the digits go as text.
        result["result"] = float(value)
        result["exact"] = str(value)
    return result


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    register(evaluate, annotations={"readOnlyHint": True, "openWorldHint": False})
