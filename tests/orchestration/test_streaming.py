"""A streamed run: its events in order, the answer streamed as the model produces it, usage asked
for and summed (DESIGN rule 7 as the loop sees it; each front door's wire format is tested end to end)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.json_types import JSON
from runtime.orchestration.events import (
    Completed,
    ModelChunk,
    ModelTurn,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    ToolsOffered,
)
from runtime.providers.function import tool_call
from tests.orchestration.conftest import Loop, completed

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def clock_then_words(messages: list[JSON], tools: list[JSON], body: JSON) -> AsyncIterator[str | JSON]:
    if messages[-1]["role"] != "tool":
        yield {"tool_calls": [{"index": 0, **tool_call("clock__now", {}, call_id="call_clock")["tool_calls"][0]}]}
        yield {"usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}
        return
    for word in ("It ", "is ", "noon."):
        yield word
    yield {"usage": {"prompt_tokens": 70, "completion_tokens": 3, "total_tokens": 73}}


def kinds(events: list[Any]) -> list[str]:
    """Event class names, consecutive repeats folded."""
    folded: list[str] = []
    for event in events:
        name = type(event).__name__
        if not folded or folded[-1] != name:
            folded.append(name)
    return folded


async def test_a_streamed_run_yields_its_events_in_order(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "", stream=clock_then_words)
    events = await loop.stream()

    assert kinds(events) == [
        "ToolsOffered",
        "ModelChunk",  # round 1: the tool call's deltas (front doors do not pass them on)
        "ModelTurn",
        "ToolCallStarted",
        "ToolCallFinished",
        "ModelChunk",  # round 2: the answer, as the model produces it
        "ModelTurn",
        "Completed",
    ]
    assert isinstance(events[0], ToolsOffered)
    answer = [e.text for e in events if isinstance(e, ModelChunk) and e.round == 2 and e.text]
    assert answer == ["It ", "is ", "noon."]
    turns = [e for e in events if isinstance(e, ModelTurn)]
    assert [t.round for t in turns] == [1, 2]
    assert turns[0].message["tool_calls"][0]["function"]["name"] == "clock__now"
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert started.call_id == finished.call_id == "call_clock" and finished.ok
    done = completed(events)
    assert done.message["content"] == "It is noon."
    assert done.usage == {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128}


async def test_every_streamed_round_asks_the_provider_for_usage(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "", stream=clock_then_words)
    await loop.stream()
    assert len(loop.requests) == 2
    for body in loop.requests:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_tool_progress_is_streamed_while_the_tool_runs(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "finished" if messages[-1]["role"] == "tool" else tool_call("testkit__steps", {"count": 3, "seconds": 0.001}))
    events = await loop.stream()
    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert [(p.progress, p.total) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    started = next(i for i, e in enumerate(events) if isinstance(e, ToolCallStarted))
    finished = next(i for i, e in enumerate(events) if isinstance(e, ToolCallFinished))
    assert all(started < events.index(p) < finished for p in progress)
    assert isinstance(events[-1], Completed) and events[-1].message["content"] == "finished"


async def test_a_streamed_final_round_drops_tool_call_deltas(loop: Loop) -> None:
    async def keeps_calling(messages: list[JSON], tools: list[JSON], body: JSON) -> AsyncIterator[str | JSON]:
        yield "Let me check."
        yield {"tool_calls": [{"index": 0, **tool_call("clock__now", {})["tool_calls"][0]}]}

    loop.model(lambda messages, tools, body: "", stream=keeps_calling)
    events = await loop.stream()
    final = [e for e in events if isinstance(e, ModelChunk) and e.round == len(loop.requests)]
    assert final and not any("tool_calls" in (c.get("delta") or {}) for e in final for c in e.chunk.get("choices") or ())
    assert completed(events).stopped_by == "repeated_call"
    assert loop.requests[-1]["tool_choice"] == "none"
