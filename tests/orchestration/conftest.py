"""The orchestration loop in-process: the real gateway (admission, loop, tools, accounting) on a ``function`` provider.

No HTTP and no uvicorn: the model is a Python function of the conversation
(:class:`runtime.providers.function.FunctionProvider`), the plugins are real
ones (first-party ``clock``/``calculator`` and the test ``testkit`` and
``catalogue``). One gateway per orchestration setting is opened for the whole
session, so a test costs what its run costs: milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from runtime.config import settings_from_dict
from runtime.gateway import Gateway
from runtime.json_types import JSON
from runtime.orchestration.events import Completed, Event
from runtime.providers.function import ChatFunction, FunctionProvider, Reply, StreamFunction
from runtime.request import DoorRules, KeepAlive, PluginRequest, Resume, RunRequest, RunResult
from tests.support import test_plugins

MODEL = "fn-model"
_request_ids = itertools.count(1)


class Loop:
    """One gateway on a function provider; each test says how the model answers."""

    def __init__(self, gateway: Gateway, provider: FunctionProvider) -> None:
        self.gateway = gateway
        self.provider = provider
        self.requests: list[JSON] = []  # every body the model was asked with, in order
        self._reply: ChatFunction = lambda messages, tools, body: "(no model set)"
        provider.function = self._answer

    def _answer(self, messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        self.requests.append(orjson.loads(orjson.dumps(body)))  # a copy: the loop keeps mutating its lists
        return self._reply(messages, tools, body)

    def model(self, reply: ChatFunction, *, stream: StreamFunction | None = None) -> None:
        """How the model answers from now on (a fresh test: the requests seen so far are forgotten)."""
        self.requests.clear()
        self._reply = reply
        if stream is None:
            self.provider.stream_function = None
            return

        async def recorded(messages: list[JSON], tools: list[JSON], body: JSON) -> AsyncIterator[str | JSON]:
            self.requests.append(orjson.loads(orjson.dumps(body)))
            async for delta in stream(messages, tools, body):
                yield delta

        self.provider.stream_function = recorded

    async def _admit(self, organisation: str, source: str, plugins: Sequence[str] | None, server_tools: bool = True) -> Any:
        # The rules of the front door that labels its usage ``source`` (tests/orchestration drives the loop directly).
        door = DoorRules(source, guardrails_default=source in ("api", "responses", "messages"), can_ask_approval=source == "responses")
        return await self.gateway.admit(
            door,
            server_tools=server_tools,
            key=None,
            organisation_id=organisation,
            request_id=f"req-loop-{next(_request_ids)}",
            model=MODEL,
            plugins=None if plugins is None else [PluginRequest(p, "enabled_plugin_ids") for p in plugins],
        )

    async def run(
        self,
        prompt: str | list[JSON] = "hello",
        *,
        organisation: str = "acme",
        source: str = "api",
        plugins: Sequence[str] | None = None,
        resume: Resume | None = None,
        server_tools: bool = True,
        **body: Any,
    ) -> RunResult:
        """A non-streamed run, admitted and accounted as a front door does it.

        ``server_tools`` False is what the chat front door passes for a request with its own tools.
        """
        ctx = await self._admit(organisation, source, plugins, server_tools)
        return await self.gateway.run(ctx, RunRequest(_body(prompt, body), resume=resume))

    async def stream(
        self, prompt: str | list[JSON] = "hello", *, organisation: str = "acme", source: str = "api", plugins: Sequence[str] | None = None, **body: Any
    ) -> list[Event]:
        """A streamed run's events in order (keep-alives left out)."""
        ctx = await self._admit(organisation, source, plugins)
        return [event async for event in self.gateway.stream(ctx, RunRequest(_body(prompt, body), stream=True)) if not isinstance(event, KeepAlive)]


def _body(prompt: str | list[JSON], extra: JSON) -> JSON:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return {"model": MODEL, "messages": messages, **extra}


def completed(events: Sequence[Event]) -> Completed:
    last = events[-1]
    assert isinstance(last, Completed)
    return last


def tool_results(body: JSON) -> dict[str, str]:
    """The tool messages of a request the model received, by call id."""
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}


def answered(text: str, usage: JSON | None = None) -> Reply:
    """A whole chat.completion answering ``text`` (with ``usage`` as the upstream reports it)."""
    completion: JSON = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        completion["usage"] = usage
    return completion


class Loops:
    """Gateways by orchestration setting, opened once for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[tuple[tuple[str, Any], ...], Loop] = {}

    async def get(self, **orchestration: Any) -> Loop:
        key = tuple(sorted(orchestration.items()))
        loop = self._open.get(key)
        if loop is None:
            database = self.root / f"loop-{len(self._open)}.db"
            settings = settings_from_dict(
                {
                    "database_url": f"sqlite:///{database}",
                    "providers": [{"id": "fn", "kind": "function"}],
                    "models": [{"id": MODEL, "provider": "fn", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
                    "organisations": [
                        {"id": "acme", "plugins": [{"id": "clock"}, {"id": "calculator"}, {"id": "testkit"}]},
                        {"id": "big", "plugins": [{"id": "catalogue"}]},
                        {"id": "careful", "plugins": [{"id": "testkit", "require_approval": "always"}]},
                        {"id": "noisy"},
                        {"id": "quiet"},
                    ],
                    "orchestration": {"max_tool_rounds": 3, "tool_timeout_s": 5, "max_tool_result_chars": 300, **orchestration},
                    "usage": {"flush_interval_s": 0.05},
                }
            )
            provider = FunctionProvider("fn", lambda messages, tools, body: "")
            gateway = await Gateway.create(settings, plugins=test_plugins(), providers={"fn": provider})
            loop = self._open[key] = Loop(gateway, provider)
        return loop

    async def aclose(self) -> None:
        for loop in self._open.values():
            await loop.gateway.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def loops(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loops]:
    opened = Loops(tmp_path_factory.mktemp("loops"))
    yield opened
    await opened.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def loop(loops: Loops) -> Loop:
    """The gateway with the default test settings (3 rounds, 5 s tool timeout, results capped at 300 characters)."""
    return await loops.get()
