"""The offline demo model: deterministic, no network, clearly labelled.

It exists so that the quick start shows orchestration without an API key and so
that plugins can be tried offline. It picks a tool only when the user's words
clearly ask for one (a calculation, a percentage, a unit conversion, the time, a
date, a URL, a tool named in the message: plugin tools and the client's own
``tools[]`` alike, whatever their naming style), fills arguments it can read from
the text, honours a forced ``tool_choice``, and otherwise answers plainly. Its
final answer, after any number of tool rounds, keeps the requested format:
``response_format`` json_schema (a valid instance, filled with what the tools
returned) and json_object (the keys the instructions ask for). Every text answer
starts with ``[demo model]``.

What it can plan is a list of planners (:data:`PLANNERS`), each reading the
user's text and the offered tools; a new skill is one more planner.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import orjson

from runtime.config import ProviderConfig
from runtime.json_types import JSON
from runtime.providers.demo_code import code_mode_turn
from runtime.providers.demo_schema import example_instance

LABEL = "[demo model]"
# Embeddings: vector length when the request gives no `dimensions`, and the note every answer carries.
DEMO_EMBEDDING_DIMENSIONS = 256
EMBEDDING_NOTE = f"{LABEL} deterministic vectors from a hash of each input: equal inputs embed equally; nothing semantic."

_ARITHMETIC = re.compile(r"(?<![\w.])(?:\(?\s*-?\d+(?:\.\d+)?\s*\)?\s*(?:[-+*/^%×÷]|\*\*)\s*)+\(?\s*-?\d+(?:\.\d+)?\s*\)?")
_SQRT = re.compile(r"(?:square root of|sqrt\s*\(?)\s*(\d+(?:\.\d+)?)\)?", re.I)
_URL = re.compile(r"https?://[^\s<>\"')]+")
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_DEFERRED = re.compile(r"before calling them:\s*([A-Za-z0-9_\-\s]+)")
_COMMAND_KEYS = ("command", "cmd")
# Context a coding agent adds to the user's turn (Claude Code's reminders): not what the user asked.
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_RECORD_ID = re.compile(r"\b[A-Z]{1,3}-\d{3,}\b")
_TIME_WORDS = re.compile(r"\b(what time|current time|time is it|time now|the time in|today's date|what day|what's the date|what is the date)\b", re.I)
_IN_PLACE = re.compile(r"\bin ([A-Z][A-Za-z]+(?:[ /_][A-Z][A-Za-z]+)*)")
_STOP_WORDS = {"get", "list", "the", "a", "of", "by", "for", "search", "find", "lookup", "look", "up", "create", "update"}
_CITY_ZONES = {
    "paris": "Europe/Paris", "london": "Europe/London", "berlin": "Europe/Berlin", "madrid": "Europe/Madrid",
    "rome": "Europe/Rome", "amsterdam": "Europe/Amsterdam", "lisbon": "Europe/Lisbon", "new york": "America/New_York",
    "chicago": "America/Chicago", "los angeles": "America/Los_Angeles", "san francisco": "America/Los_Angeles",
    "sao paulo": "America/Sao_Paulo", "tokyo": "Asia/Tokyo", "singapore": "Asia/Singapore", "dubai": "Asia/Dubai",
    "mumbai": "Asia/Kolkata", "delhi": "Asia/Kolkata", "sydney": "Australia/Sydney", "lagos": "Africa/Lagos",
    "nairobi": "Africa/Nairobi", "utc": "UTC",
}


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _message_text(message: JSON) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    if isinstance(content, str):
        return _REMINDER.sub("", content).strip() if "<system-reminder>" in content else content
    return ""


Call = tuple[str, JSON]
Planner = Callable[[str, list[JSON]], list[Call]]
_NUMBER = r"-?\d+(?:\.\d+)?"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERCENT_OF = re.compile(rf"({_NUMBER})\s*(?:%|percent)\s+of\s+({_NUMBER})", re.I)
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_DAYS_OFFSET = re.compile(r"\b(\d+)\s+(days?|weeks?)\s+(from|after|before)\s+(today|tomorrow|\d{4}-\d{2}-\d{2})", re.I)
_DAYS_AGO = re.compile(r"\b(\d+)\s+(days?|weeks?)\s+ago\b", re.I)
# Units by dimension, as a factor to the dimension's base unit (metre, kilogram, litre).
_UNITS: dict[str, tuple[str, float]] = {}
for _dimension, _factor, _names in (
    ("length", 1000.0, "km kilometer kilometers kilometre kilometres"),
    ("length", 1609.344, "mi mile miles"),
    ("length", 1.0, "m meter meters metre metres"),
    ("length", 0.01, "cm centimeter centimeters centimetre centimetres"),
    ("length", 0.3048, "ft foot feet"),
    ("length", 0.0254, "inch inches"),
    ("mass", 1.0, "kg kilo kilos kilogram kilograms"),
    ("mass", 0.001, "g gram grams"),
    ("mass", 0.45359237, "lb lbs pound pounds"),
    ("mass", 0.028349523125, "oz ounce ounces"),
    ("volume", 1.0, "l liter liters litre litres"),
    ("volume", 0.001, "ml milliliter milliliters millilitre millilitres"),
    ("volume", 3.785411784, "gal gallon gallons"),
    ("temperature", 0.0, "c °c celsius degc"),
    ("temperature", 1.0, "f °f fahrenheit degf"),
):
    for _name in _names.split():
        _UNITS[_name] = (_dimension, _factor)
_UNIT = r"(°?[a-z]+)"
_CONVERT = re.compile(rf"({_NUMBER})\s*(?:degrees\s+)?{_UNIT}\s+(?:in|to|into|as)\s+(?:degrees\s+)?{_UNIT}\b", re.I)
_HOW_MANY = re.compile(rf"how many\s+(?:degrees\s+)?{_UNIT}\s+(?:is|are|in|make)\s+({_NUMBER})\s*(?:degrees\s+)?{_UNIT}\b", re.I)


def words_of(name: str) -> list[str]:
    """A tool or parameter name as lower-case words, whatever its style: ``getWeather``,
    ``get_weather``, ``get-weather``, ``weather.get``, ``crm__lookup_customer`` (its last part)."""
    short = name.rsplit("__", 1)[-1]
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", short)
    return [word for word in re.split(r"[_\-.\s]+", spaced.lower()) if word]


def _snake(name: str) -> str:
    return "_".join(words_of(name))


def _find(tools: list[JSON], suffix: str) -> str | None:
    """The offered tool whose name, in any style, is ``suffix`` (``evaluate``, ``date_add``)."""
    for tool in tools:
        name = (tool.get("function") or {}).get("name", "")
        if _snake(name) == suffix:
            return str(name)
    return None


def calculation(text: str) -> tuple[str, str] | None:
    """The arithmetic the text asks for, as (expression for the calculator, how to say it)."""
    text = _THOUSANDS.sub("", text)
    sqrt = _SQRT.search(text)
    if sqrt:
        return f"sqrt({sqrt.group(1)})", f"the square root of {sqrt.group(1)}"
    percent = _PERCENT_OF.search(text)
    if percent:
        share, whole = percent.groups()
        return f"{share} / 100 * {whole}", f"{share}% of {whole}"
    conversion = _conversion(text)
    if conversion:
        return conversion
    arithmetic = _ARITHMETIC.search(_ISO_DATE.sub(" ", text))  # 2026-12-25 is a date, not a subtraction
    if arithmetic:
        expression = arithmetic.group(0).strip()
        return expression, expression
    return None


def _conversion(text: str) -> tuple[str, str] | None:
    found = _CONVERT.search(text)
    if found:
        amount, source, target = found.groups()
    else:
        asked = _HOW_MANY.search(text)
        if not asked:
            return None
        target, amount, source = asked.groups()
    source, target = source.lower(), target.lower()
    if source not in _UNITS or target not in _UNITS or _UNITS[source][0] != _UNITS[target][0] or source == target:
        return None
    said = f"{amount} {source} in {target}"
    if _UNITS[source][0] == "temperature":
        if _UNITS[source][1] == _UNITS[target][1]:
            return None
        return (f"({amount} - 32) * 5 / 9", said) if _UNITS[source][1] else (f"{amount} * 9 / 5 + 32", said)
    return f"{amount} * {_UNITS[source][1]:.12g} / {_UNITS[target][1]:.12g}", said


def _plan_calculation(text: str, tools: list[JSON]) -> list[Call]:
    evaluate = _find(tools, "evaluate")
    found = calculation(text) if evaluate else None
    return [(evaluate, {"expression": found[0]})] if evaluate and found else []


def _plan_time(text: str, tools: list[JSON]) -> list[Call]:
    now = _find(tools, "now")
    if not now or not _TIME_WORDS.search(text) or _ISO_DATE.search(text):
        return []  # "what day is 2026-12-25" is a date question, not the time now
    zone = "UTC"
    place = _IN_PLACE.search(text)
    if place:
        zone = _CITY_ZONES.get(place.group(1).lower(), place.group(1) if "/" in place.group(1) else "UTC")
    return [(now, {"timezone": zone})]


def _day(word: str) -> str:
    today = datetime.now(UTC).date()
    if word.lower() == "today":
        return today.isoformat()
    if word.lower() == "tomorrow":
        return (today + timedelta(days=1)).isoformat()
    return word


def _plan_dates(text: str, tools: list[JSON]) -> list[Call]:
    """Date arithmetic with the clock's ``date_add`` and ``days_between``: offsets, spans, weekdays."""
    date_add, days_between = _find(tools, "date_add"), _find(tools, "days_between")
    dates = _ISO_DATE.findall(text)
    lowered = text.lower()
    offset = _DAYS_OFFSET.search(text)
    if date_add and offset:
        count, unit, direction, start = offset.groups()
        sign = -1 if direction.lower() == "before" else 1
        field = "weeks" if unit.lower().startswith("week") else "days"
        return [(date_add, {"start_date": _day(start), field: sign * int(count)})]
    ago = _DAYS_AGO.search(text)
    if date_add and ago:
        field = "weeks" if ago.group(2).lower().startswith("week") else "days"
        return [(date_add, {"start_date": _day("today"), field: -int(ago.group(1))})]
    if days_between and len(dates) >= 2 and re.search(r"\b(between|from|days)\b", lowered):
        return [(days_between, {"start_date": dates[0], "end_date": dates[1]})]
    if days_between and dates and re.search(r"\b(until|till|since|before)\b", lowered):
        since = "since" in lowered
        return [(days_between, {"start_date": dates[0] if since else _day("today"), "end_date": _day("today") if since else dates[0]})]
    if date_add and dates and re.search(r"\bwhat day\b|\bweekday\b|\bday of the week\b", lowered):
        return [(date_add, {"start_date": dates[0], "days": 0})]
    return []


def _plan_fetch(text: str, tools: list[JSON]) -> list[Call]:
    fetch = _find(tools, "fetch")
    url = _URL.search(text)
    return [(fetch, {"url": url.group(0).rstrip(".,;")})] if fetch and url else []


def _plan_shell(text: str, tools: list[JSON]) -> list[Call]:
    """A command in backticks for a tool that runs commands (a coding agent's shell: ``Bash``'s
    ``command``, ``exec_command``'s ``cmd``): run exactly that, and nothing else this round."""
    command = _BACKTICKED.search(text)
    if command is None:
        return []
    for tool in tools:
        function = tool.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        for key in _COMMAND_KEYS:
            if (properties.get(key) or {}).get("type") == "string":
                return [(str(function.get("name") or ""), {key: command.group(1)})]
    return []


def _deferred(messages: list[JSON], tools: list[JSON]) -> list[JSON]:
    """Tools an agent names but defers (Claude Code: "... load tool schemas before calling them: A B C"),
    as schemaless stand-ins, so that planning can tell whether one is wanted."""
    offered = {(t.get("function") or {}).get("name") for t in tools}
    names: dict[str, None] = {}
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else " ".join(str(p.get("text") or "") for p in content or () if isinstance(p, dict))
        for listed in _DEFERRED.findall(text):
            names.update(dict.fromkeys(n for n in listed.split() if n not in offered))
    return [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}} for n in names]


def _search_tool(tools: list[JSON]) -> str | None:
    """The agent's tool that loads deferred tools by query (Claude Code's ``ToolSearch``)."""
    for tool in tools:
        function = tool.get("function") or {}
        if "deferred tools" in str(function.get("description") or "").lower() and "query" in ((function.get("parameters") or {}).get("properties") or {}):
            return str(function.get("name"))
    return None


def _plan_named_tools(text: str, tools: list[JSON]) -> list[Call]:
    """Any tool whose name's words all appear in the text (``lookupCustomer``: "look up customer C-1002")."""
    lowered = text.lower()
    calls: list[Call] = []
    for tool in tools:
        function = tool.get("function") or {}
        name = function.get("name", "")
        every_word = words_of(name)
        words = [w for w in every_word if w not in _STOP_WORDS]
        if not words or not all(re.search(rf"\b{re.escape(w)}", lowered) for w in words):
            continue
        arguments = _fill_arguments(function.get("parameters") or {}, text)
        if arguments == {}:
            # Without arguments to go on, only a tool named in full ("list articles") is meant.
            if not all(re.search(rf"\b{re.escape(w)}", lowered) for w in every_word):
                continue
        if arguments is not None:
            calls.append((name, arguments))
    return calls


# In order: the first planners' calls win over a later planner's call of the same tool.
PLANNERS: list[Planner] = [_plan_calculation, _plan_time, _plan_dates, _plan_fetch, _plan_named_tools]


def _plan_tool_calls(text: str, tools: list[JSON]) -> list[Call]:
    shell = _plan_shell(text, tools)
    if shell:
        return shell
    calls: list[Call] = []
    for planner in PLANNERS:
        for name, arguments in planner(text, tools):
            if all(name != chosen for chosen, _ in calls):
                calls.append((name, arguments))
    return calls


def _fill_arguments(schema: JSON, text: str) -> JSON | None:
    properties: JSON = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    arguments: JSON = {}
    for original, prop in properties.items():
        name = _snake(original)  # customerEmail, customer-email and customer_email alike
        kind = prop.get("type")
        value: Any = None
        if name in ("email", "customer_email") or "email" in name:
            match = _EMAIL.search(text)
            value = match.group(0) if match else None
        elif name in ("url", "link"):
            match = _URL.search(text)
            value = match.group(0) if match else None
        elif set(name.split("_")) & {"city", "location", "place", "town"}:
            match = _IN_PLACE.search(text)
            value = match.group(1) if match else None
        elif name in ("query", "q", "question", "text", "search", "keywords", "message") and (
            _EMAIL.search(text) or _RECORD_ID.search(text)
        ):
            # A lookup by an identifier is more precise than by the whole sentence.
            match = _EMAIL.search(text) or _RECORD_ID.search(text)
            value = match.group(0) if match else None
        elif name in ("customer_id", "order_id", "ticket_id", "id") and _RECORD_ID.search(text):
            match = _RECORD_ID.search(text)
            value = match.group(0) if match else None
        elif name in ("query", "q", "question", "text", "search", "keywords", "message"):
            value = re.sub(r"^(please\s+)?(search|find|look up|lookup)\s+(articles?\s+)?(for|about)?\s*", "", text.strip(), flags=re.I)
        elif kind == "integer" and original in required:
            match = re.search(r"\b\d+\b", text)
            value = int(match.group(0)) if match else None
        elif original in required:
            # A tool of the client's own, with parameters the demo has no rule for.
            value = _generic_argument(prop, text)
        if value is None and original in required:
            return None
        if value is not None:
            arguments[original] = value
    return arguments


def _generic_argument(prop: JSON, text: str) -> Any:
    """A plausible value for a required parameter: quoted words, a number, an enum named in the text."""
    kind = prop.get("type")
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return example_instance(prop, text=text)
    if kind in ("integer", "number"):
        match = re.search(r"-?\b\d+(?:\.\d+)?\b", text)
        if match is None:
            return example_instance(prop)
        number = float(match.group(0))
        return int(number) if kind == "integer" else number
    if kind == "string" or kind is None:
        quoted = re.search(r"[\"“']([^\"”']+)[\"”']", text)
        return quoted.group(1) if quoted else text.strip()[:200] or "demo"
    return example_instance(prop, text=text)


def _forced_tool(tool_choice: Any, tools: list[JSON]) -> str | None:
    """The tool a request forces: ``{"type": "function", "function": {"name": ...}}``, or "required"'s first."""
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    if tool_choice == "required" and tools:
        return str((tools[0].get("function") or {}).get("name") or "") or None
    return None


def _instructions(body: JSON) -> str:
    """The system/developer messages and the last user message: where a requested format is described."""
    messages: list[JSON] = body.get("messages") or []
    said = [_message_text(m) for m in messages if m.get("role") in ("system", "developer")]
    user = next((_message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    return " ".join([*said, user])


_QUOTED_KEY = re.compile(r"[`\"]([A-Za-z_][A-Za-z0-9_]{0,40})[`\"]")
_LISTED_KEYS = re.compile(r"\b(?:keys?|fields?|properties)\b\s*:?\s*((?:[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*|\s+and\s+|,\s*and\s+)?){1,12})", re.I)


def requested_keys(instructions: str) -> list[str]:
    """The keys a JSON-mode request asks for: quoted (`city`, "temperature") or listed ("with keys city and temperature")."""
    quoted = list(dict.fromkeys(_QUOTED_KEY.findall(instructions)))
    if quoted:
        return quoted
    listed = _LISTED_KEYS.search(instructions)
    if not listed:
        return []
    names = re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", listed.group(1).strip())
    return [name for name in dict.fromkeys(names) if name and name.lower() not in ("the", "a", "with", "named", "called")]


def _facts(results: list[tuple[str, str]]) -> JSON:
    """What the tools returned, by field name (snake case), for filling a structured answer."""
    facts: JSON = {}
    for _name, content in results:
        data = _result_data(content)
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str | int | float | bool):
                    facts.setdefault(_snake(key), value)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        facts.setdefault("_number", value)
    return facts


def _result_data(content: str) -> Any:
    """A tool result as data: JSON, or a Python literal (some SDKs send ``str(dict)`` back)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    if len(content) > 20_000:
        return None
    try:
        return ast.literal_eval(content)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _fact_for(key: str, prop: JSON, facts: JSON) -> Any:
    """A tool's value for this field, if one fits its type: the same name, or the result for a number."""
    kind = prop.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    value = facts.get(_snake(key))
    if value is None and kinds & {"number", "integer"}:
        value = facts.get("_number")
    if value is None or isinstance(value, bool) != ("boolean" in kinds):
        return None
    if isinstance(value, int | float):
        if "integer" in kinds and float(value).is_integer():
            return int(value)
        return value if "number" in kinds else None
    return value if "string" in kinds else None


def _with_facts(instance: Any, schema: JSON, facts: JSON) -> Any:
    """The schema's example instance with the tools' values put in the fields they fit (still valid)."""
    if not facts or not isinstance(instance, dict):
        return instance
    properties = schema.get("properties") or {}
    filled = dict(instance)
    for key, prop in properties.items():
        if isinstance(prop, dict) and "enum" not in prop and "const" not in prop:
            value = _fact_for(key, prop, facts)
            if value is not None:
                filled[key] = value
    try:
        jsonschema.validate(filled, schema)
    except jsonschema.exceptions.SchemaError:
        return filled
    except jsonschema.ValidationError:
        return instance  # a bound or pattern the tool's value breaks: keep the plain example
    return filled


def formatted_answer(body: JSON, text: str, facts: JSON) -> str:
    """The final answer in the format the request asks for: ``response_format`` json_schema or
    json_object, else ``text`` itself."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        assert isinstance(response_format, dict)
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return orjson.dumps(_with_facts(example_instance(schema, text=text), schema, facts)).decode()
    if kind == "json_object":
        keys = requested_keys(_instructions(body))
        if not keys:
            answer: JSON = {"answer": text}
            if "_number" in facts:
                answer["result"] = facts["_number"]
            return orjson.dumps(answer).decode()
        return orjson.dumps({key: _fact_for(key, {"type": ["string", "number"]}, facts) or text for key in keys}).decode()
    return text


def _summarise_result(name: str, content: str, asked: str = "") -> str:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    short = _snake(name)
    if isinstance(data, dict):
        if "error" in data:
            error = data["error"]
            message = error.get("message") if isinstance(error, dict) else error
            return f"{name} failed: {message}"
        if short == "evaluate" and "result" in data:
            found = calculation(asked)
            if found and found[0] == data.get("expression") and found[1] != found[0]:
                return f"{found[1]} = {data['result']} ({data.get('expression')} = {data['result']})"
            return f"{data.get('expression')} = {data['result']}"
        if short == "now" and "datetime" in data:
            return f"It is {data['datetime']} ({data.get('weekday', '')}) in {data.get('timezone')}."
        if short == "date_add" and "date" in data:
            return f"The date is {data['date']} ({data.get('weekday', '')})."
        if short == "days_between" and "days" in data:
            return f"{data['days']} days."
        if short == "fetch" and "text" in data:
            title = data.get("title") or data.get("url")
            return f"{title}: {str(data['text'])[:300]}"
    text = content if len(content) <= 400 else content[:400] + "…"
    return f"{name} returned: {text}"


def _force_call(name: str, tools: list[JSON], text: str) -> list[tuple[str, JSON]]:
    for tool in tools:
        function = tool.get("function") or {}
        if function.get("name") == name:
            schema = function.get("parameters") or {}
            arguments = _fill_arguments(schema, text)
            return [(name, arguments if arguments is not None else example_instance(schema, text=text) or {})]
    return []


def _loads_tools(message: JSON) -> bool:
    """An assistant turn that only asked to load deferred tools (``{"query": "select:..."}``)."""
    calls = message.get("tool_calls") or ()
    if message.get("role") != "assistant" or not calls:
        return False
    return all(str((call.get("function") or {}).get("arguments") or "").replace(" ", "").startswith('{"query":"select:') for call in calls)


def _last_calls(messages: list[JSON]) -> set[str]:
    """The names of the tools the last assistant turn called."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return {str((call.get("function") or {}).get("name")) for call in message.get("tool_calls") or ()}
    return set()


class DemoProvider:
    kind = "demo"

    def __init__(self, config: ProviderConfig | None = None) -> None:
        self.id = config.id if config else "demo"

    def _decide(self, body: JSON) -> tuple[str, list[Call]]:
        messages: list[JSON] = body.get("messages") or []
        tools: list[JSON] = body.get("tools") or []
        tool_choice = body.get("tool_choice", "auto")
        asked = next((_message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        scripted = code_mode_turn(messages, tools, asked, plan=_plan_tool_calls, summarise=_summarise_result, label=LABEL)
        if scripted is not None:
            return scripted
        user_text = ""
        # Turns after loading deferred tools are the agent's ("Tool loaded."), not the user's.
        loaded = max((i for i, m in enumerate(messages) if _loads_tools(m)), default=len(messages))
        for message in reversed(messages[:loaded]):
            # The last thing the user said (an agent's turn may hold only its own reminders).
            if message.get("role") == "user" and _message_text(message).strip():
                user_text = _message_text(message)
                break
        search = _search_tool(tools) if tool_choice != "none" else None
        deferred = _deferred(messages, tools) if search else []
        if messages and messages[-1].get("role") == "tool" and not (search and _last_calls(messages) == {search}):
            return self._answer_from_results(body, messages, user_text), []
        if search and deferred and not (messages and messages[-1].get("role") == "tool"):
            wanted = [name for name, _ in _plan_tool_calls(user_text, deferred)]
            if wanted:
                # Load the deferred tools the request needs first, as the agent asks.
                return "", [(search, {"query": "select:" + ",".join(wanted)})]
        if tools and tool_choice != "none":
            calls = _plan_tool_calls(user_text, tools + deferred)
            forced = _forced_tool(tool_choice, tools)
            if forced is not None:
                calls = [call for call in calls if call[0] == forced] or _force_call(forced, tools, user_text)
            if calls:
                return "", calls
        if body.get("response_format") and isinstance(body["response_format"], dict) and body["response_format"].get("type") != "text":
            return formatted_answer(body, f"{LABEL} {user_text.strip()[:200]}", {}), []
        if tool_choice not in (None, "none", "auto") and tools:
            return f"{LABEL} I could not tell which tool to use.", []
        available = ", ".join((t.get("function") or {}).get("name", "") for t in tools) or "none"
        return (
            f"{LABEL} You said: \"{user_text.strip()[:200]}\". I am plugway's offline demo model. "
            f"Ask me for the time somewhere, a calculation such as 'what is 17 * 23?' or '12.5% of 1,840', "
            f"a conversion such as '26.2 miles in km', a date such as '30 days from 2026-01-15', or to fetch a URL. "
            f"Tools I can use here: {available}.",
            [],
        )

    @staticmethod
    def _answer_from_results(body: JSON, messages: list[JSON], user_text: str) -> str:
        """The final answer after a tool round: the results summed up, in the requested format."""
        names = {}
        for message in reversed(messages):
            if message.get("role") == "assistant":
                for call in message.get("tool_calls") or ():
                    names[call.get("id")] = (call.get("function") or {}).get("name", "tool")
                break
        results = [
            (names[message["tool_call_id"]], _message_text(message))
            for message in messages
            if message.get("role") == "tool" and message.get("tool_call_id") in names
        ]
        text = f"{LABEL} " + " ".join(_summarise_result(name, content, user_text) for name, content in results)
        return formatted_answer(body, text, _facts(results))

    def _usage(self, body: JSON, text: str, calls: list[Call]) -> JSON:
        prompt = sum(_estimate_tokens(_message_text(m)) + 4 for m in body.get("messages") or [])
        prompt += sum(_estimate_tokens(orjson.dumps(t).decode()) for t in body.get("tools") or [])
        completion = _estimate_tokens(text) if text else 0
        completion += sum(_estimate_tokens(orjson.dumps(args).decode()) + 4 for _, args in calls)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @staticmethod
    def _tool_calls(calls: list[Call]) -> list[JSON]:
        return [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
            }
            for name, arguments in calls
        ]

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        text, calls = self._decide(body)
        message: JSON = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = self._tool_calls(calls)
        return {
            "id": f"chatcmpl-demo-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "demo"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}],
            "usage": self._usage(body, text, calls),
        }

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        text, calls = self._decide(body)
        base = {
            "id": f"chatcmpl-demo-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "demo"),
        }

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        yield chunk({"role": "assistant", "content": ""})
        for word in re.findall(r"\S+\s*", text):
            yield chunk({"content": word})
        for index, call in enumerate(self._tool_calls(calls)):
            arguments = call["function"]["arguments"]
            yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]})
            for start in range(0, len(arguments), 8):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start : start + 8]}}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": self._usage(body, text, calls)}

    async def embeddings(self, body: JSON, *, request_id: str | None = None) -> JSON:
        """OpenAI's embeddings response with :func:`demo_vector` vectors (as floats; the front door encodes base64)."""
        inputs = body["input"] if isinstance(body.get("input"), list) and not _is_tokens(body["input"]) else [body.get("input")]
        dimensions = int(body.get("dimensions") or DEMO_EMBEDDING_DIMENSIONS)
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(str(token) for token in item or ())
            tokens += len(item) if isinstance(item, list) else _estimate_tokens(text)
            data.append({"object": "embedding", "index": index, "embedding": demo_vector(text, dimensions)})
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", "demo"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "plugway_demo": EMBEDDING_NOTE,
        }

    async def aclose(self) -> None:
        return None


def _is_tokens(value: list[Any]) -> bool:
    """One input given as token ids (``[1, 2, 3]``), as opposed to a list of inputs."""
    return bool(value) and all(isinstance(token, int) and not isinstance(token, bool) for token in value)


def demo_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text's SHA-3 hash (SHAKE-256 stretched to ``dimensions`` numbers)."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(4 * dimensions)
    values = [value / 2**31 - 1.0 for value in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]
