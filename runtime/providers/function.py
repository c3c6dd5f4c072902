"""The ``function`` provider kind: a model played by a local Python function.

Modelled on pydantic-ai's ``FunctionModel``: the orchestration loop, the router
and the front doors run for real while the "upstream" is a function called
in-process, so the loop's rules can be tested in milliseconds with no HTTP.

    def model(messages, tools, body):          # sync or async
        if messages[-1]["role"] == "tool":
            return "It is noon."              # an answer
        return tool_call("clock__now", {})     # or tool calls, or a whole chat.completion

    gateway = await Gateway.create(settings, providers={"fn": FunctionProvider("fn", model)})

A reply is a ``str`` (the answer's text), an assistant message dict (``content``
and/or ``tool_calls``) or a complete ``chat.completion`` dict (taken as it is,
``usage`` included). Without ``usage`` the provider counts about four
characters a token, as plugway does for an upstream that reports none.

Streams: a ``stream_function`` with the same arguments yields text deltas
(``str``) or OpenAI ``delta`` dicts (``{"tool_calls": [...]}``); the provider
wraps them into ``chat.completion.chunk``s and adds the finish and usage chunks.
Without one, a stream is the non-streamed reply cut into chunks.

The function's exceptions: an :class:`~runtime.errors.UpstreamError` is a
provider failure as any adapter raises it (retries, fallbacks, breakers);
anything else propagates unchanged.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from runtime.config import ConfigError
from runtime.json_types import JSON

Reply = str | JSON
ChatFunction = Callable[[list[JSON], list[JSON], JSON], Reply | Awaitable[Reply]]
StreamFunction = Callable[[list[JSON], list[JSON], JSON], AsyncIterator[str | JSON]]

_ids = itertools.count(1)


def tool_call(name: str, arguments: JSON | str | None = None, *, call_id: str | None = None) -> JSON:
    """An assistant message with one tool call (combine several with :func:`tool_calls`)."""
    return tool_calls((name, arguments, call_id))


def tool_calls(*calls: tuple[str, JSON | str | None] | tuple[str, JSON | str | None, str | None]) -> JSON:
    """An assistant message calling several tools in one round: ``(name, arguments[, call_id])`` each."""
    made = []
    for call in calls:
        name, arguments = call[0], call[1]
        call_id = call[2] if len(call) > 2 else None
        raw = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        made.append({"id": call_id or f"call_fn_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": raw}})
    return {"role": "assistant", "content": None, "tool_calls": made}


def _estimate(text: str) -> int:
    return max(1, len(text) // 4)


def _message(reply: Reply) -> JSON:
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}
    return {"role": "assistant", **reply}


class FunctionProvider:
    """A :class:`runtime.providers.registry.Provider` whose answers come from ``function``."""

    kind = "function"

    def __init__(self, provider_id: str, function: ChatFunction, *, stream_function: StreamFunction | None = None) -> None:
        self.id = provider_id
        self.function = function
        self.stream_function = stream_function

    async def _reply(self, body: JSON) -> Reply:
        reply = self.function(list(body.get("messages") or []), list(body.get("tools") or []), body)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply

    def _usage(self, body: JSON, answer: str) -> JSON:
        prompt = _estimate(orjson.dumps([body.get("messages"), body.get("tools")]).decode())
        completion = _estimate(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def chat(self, body: JSON, *, request_id: str | None = None) -> JSON:
        reply = await self._reply(body)
        if isinstance(reply, dict) and "choices" in reply:
            return reply
        message = _message(reply)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return {
            "id": f"chatcmpl-fn-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(body, orjson.dumps(message).decode()),
        }

    async def stream_chat(self, body: JSON, *, request_id: str | None = None) -> AsyncGenerator[JSON, None]:
        completion_id = f"chatcmpl-fn-{next(_ids)}"
        created = int(time.time())

        def chunk(delta: JSON | None, finish: str | None = None, usage: JSON | None = None) -> JSON:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            out: JSON = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.get("model", ""), "choices": choices}
            if usage is not None:
                out["usage"] = usage
            return out

        yield chunk({"role": "assistant", "content": ""})
        sent: list[str] = []
        called = False
        usage: JSON | None = None
        async for delta in self._deltas(body):
            if isinstance(delta, str):
                sent.append(delta)
                yield chunk({"content": delta})
                continue
            if "usage" in delta:
                usage = delta["usage"]
                continue
            called = called or bool(delta.get("tool_calls"))
            sent.append(orjson.dumps(delta).decode())
            yield chunk(delta)
        yield chunk({}, "tool_calls" if called else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk(None, usage=usage or self._usage(body, "".join(sent)))

    async def _deltas(self, body: JSON) -> AsyncIterator[str | JSON]:
        if self.stream_function is not None:
            async for delta in self.stream_function(list(body.get("messages") or []), list(body.get("tools") or []), body):
                yield delta
            return
        reply = await self._reply(body)
        if isinstance(reply, dict) and "choices" in reply:
            message = (reply.get("choices") or [{}])[0].get("message") or {}
            usage = reply.get("usage")
        else:
            message, usage = _message(reply), None
        if message.get("content"):
            yield str(message["content"])
        for index, call in enumerate(message.get("tool_calls") or ()):
            yield {"tool_calls": [{"index": index, **call}]}
        if usage is not None:
            yield {"usage": usage}

    async def aclose(self) -> None:
        return None


def from_config(config: Any) -> FunctionProvider:
    """A ``function`` provider named only in the configuration has no function to call."""
    raise ConfigError(
        f"providers: provider '{config.id}' is of kind 'function': its Python function is given in code, "
        "as Gateway.create(settings, providers={'" + config.id + "': FunctionProvider(...)})"
    )
