"""The offline demo model: deterministic, no network, clearly labelled.

It exists so that the quick start shows orchestration without an API key and so
that plugins can be tried offline. It picks a tool only when the user's words
clearly ask for one (a calculation, the time, a URL, a tool named in the
message: plugin tools and the client's own ``tools[]`` alike), fills arguments
it can read from the text, honours a forced ``tool_choice``, answers
``response_format`` json_schema requests with a valid instance of the schema,
and otherwise answers plainly. Every text answer starts with ``[demo model]``.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from runtime.config import ProviderConfig
from runtime.providers.demo_code import code_mode_turn
from runtime.providers.demo_schema import example_instance

JSON = dict[str, Any]
LABEL = "[demo model]"
# Embeddings: vector length when the request gives no `dimensions`, and the note every answer carries.
DEMO_EMBEDDING_DIMENSIONS = 256
EMBEDDING_NOTE = f"{LABEL} deterministic vectors from a hash of each input: equal inputs embed equally; nothing semantic."

_ARITHMETIC = re.compile(r"(?<![\w.])(?:\(?\s*-?\d+(?:\.\d+)?\s*\)?\s*(?:[-+*/^%×÷]|\*\*)\s*)+\(?\s*-?\d+(?:\.\d+)?\s*\)?")
_SQRT = re.compile(r"(?:square root of|sqrt\s*\(?)\s*(\d+(?:\.\d+)?)\)?", re.I)
_URL = re.compile(r"https?://[^\s<>\"')]+")
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
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _find(tools: list[JSON], suffix: str) -> str | None:
    for tool in tools:
        name = (tool.get("function") or {}).get("name", "")
        if name == suffix or name.endswith("__" + suffix):
            return name
    return None


def _plan_tool_calls(text: str, tools: list[JSON]) -> list[tuple[str, JSON]]:
    calls: list[tuple[str, JSON]] = []
    lowered = text.lower()

    evaluate = _find(tools, "evaluate")
    if evaluate:
        sqrt = _SQRT.search(text)
        arithmetic = _ARITHMETIC.search(text)
        if sqrt:
            calls.append((evaluate, {"expression": f"sqrt({sqrt.group(1)})"}))
        elif arithmetic:
            calls.append((evaluate, {"expression": arithmetic.group(0).strip()}))

    now = _find(tools, "now")
    if now and _TIME_WORDS.search(text):
        zone = "UTC"
        place = _IN_PLACE.search(text)
        if place:
            zone = _CITY_ZONES.get(place.group(1).lower(), place.group(1) if "/" in place.group(1) else "UTC")
        calls.append((now, {"timezone": zone}))

    fetch = _find(tools, "fetch")
    url = _URL.search(text)
    if fetch and url:
        calls.append((fetch, {"url": url.group(0).rstrip(".,;")}))

    chosen = {name for name, _ in calls}
    for tool in tools:
        function = tool.get("function") or {}
        name = function.get("name", "")
        if name in chosen:
            continue
        short = name.rsplit("__", 1)[-1]
        words = [w for w in re.split(r"[_\-.]+", short.lower()) if w and w not in _STOP_WORDS]
        if not words or not all(re.search(rf"\b{re.escape(w)}", lowered) for w in words):
            continue
        arguments = _fill_arguments(function.get("parameters") or {}, text)
        if arguments == {}:
            # Without arguments to go on, only a tool named in full ("list articles") is meant.
            every_word = [w for w in re.split(r"[_\-.]+", short.lower()) if w]
            if not all(re.search(rf"\b{re.escape(w)}", lowered) for w in every_word):
                continue
        if arguments is not None:
            calls.append((name, arguments))
            chosen.add(name)
    return calls


def _fill_arguments(schema: JSON, text: str) -> JSON | None:
    properties: JSON = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    arguments: JSON = {}
    for name, prop in properties.items():
        kind = prop.get("type")
        value: Any = None
        if name in ("email", "customer_email") or "email" in name:
            match = _EMAIL.search(text)
            value = match.group(0) if match else None
        elif name in ("url", "link"):
            match = _URL.search(text)
            value = match.group(0) if match else None
        elif name in ("city", "location", "place"):
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
        elif kind == "integer" and name in required:
            match = re.search(r"\b\d+\b", text)
            value = int(match.group(0)) if match else None
        elif name in required:
            # A tool of the client's own, with parameters the demo has no rule for.
            value = _generic_argument(prop, text)
        if value is None and name in required:
            return None
        if value is not None:
            arguments[name] = value
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


def _structured_answer(body: JSON, user_text: str) -> str | None:
    """A valid JSON answer for ``response_format`` json_schema / json_object requests."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return orjson.dumps({"answer": f"{LABEL} {user_text.strip()[:200]}"}).decode()
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return orjson.dumps(example_instance(schema, text=f"{LABEL} {user_text.strip()[:200]}")).decode()


def _summarise_result(name: str, content: str) -> str:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    short = name.rsplit("__", 1)[-1]
    if isinstance(data, dict):
        if "error" in data:
            error = data["error"]
            message = error.get("message") if isinstance(error, dict) else error
            return f"{name} failed: {message}"
        if short == "evaluate" and "result" in data:
            return f"{data.get('expression')} = {data['result']}"
        if short == "now" and "datetime" in data:
            return f"It is {data['datetime']} ({data.get('weekday', '')}) in {data.get('timezone')}."
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


class DemoProvider:
    kind = "demo"

    def __init__(self, config: ProviderConfig | None = None) -> None:
        self.id = config.id if config else "demo"

    def _decide(self, body: JSON) -> tuple[str, list[tuple[str, JSON]]]:
        messages: list[JSON] = body.get("messages") or []
        tools: list[JSON] = body.get("tools") or []
        tool_choice = body.get("tool_choice", "auto")
        asked = next((_message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        scripted = code_mode_turn(messages, tools, asked, plan=_plan_tool_calls, summarise=_summarise_result, label=LABEL)
        if scripted is not None:
            return scripted
        if messages and messages[-1].get("role") == "tool":
            results = []
            names = {}
            for message in reversed(messages):
                if message.get("role") == "assistant":
                    for call in message.get("tool_calls") or ():
                        names[call.get("id")] = (call.get("function") or {}).get("name", "tool")
                    break
            for message in messages:
                if message.get("role") == "tool" and message.get("tool_call_id") in names:
                    results.append(_summarise_result(names[message["tool_call_id"]], _message_text(message)))
            return f"{LABEL} " + " ".join(results), []
        user_text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                user_text = _message_text(message)
                break
        if tools and tool_choice != "none":
            calls = _plan_tool_calls(user_text, tools)
            forced = _forced_tool(tool_choice, tools)
            if forced is not None:
                calls = [call for call in calls if call[0] == forced] or _force_call(forced, tools, user_text)
            if calls:
                return "", calls
        structured = _structured_answer(body, user_text)
        if structured is not None:
            return structured, []
        if tool_choice not in (None, "none", "auto") and tools:
            return f"{LABEL} I could not tell which tool to use.", []
        available = ", ".join((t.get("function") or {}).get("name", "") for t in tools) or "none"
        return (
            f"{LABEL} You said: \"{user_text.strip()[:200]}\". I am plugway's offline demo model. "
            f"Ask me for the time somewhere, a calculation such as 'what is 17 * 23?', or to fetch a URL. "
            f"Tools I can use here: {available}.",
            [],
        )

    def _usage(self, body: JSON, text: str, calls: list[tuple[str, JSON]]) -> JSON:
        prompt = sum(_estimate_tokens(_message_text(m)) + 4 for m in body.get("messages") or [])
        prompt += sum(_estimate_tokens(orjson.dumps(t).decode()) for t in body.get("tools") or [])
        completion = _estimate_tokens(text) if text else 0
        completion += sum(_estimate_tokens(orjson.dumps(args).decode()) + 4 for _, args in calls)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @staticmethod
    def _tool_calls(calls: list[tuple[str, JSON]]) -> list[JSON]:
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
