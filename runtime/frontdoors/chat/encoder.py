"""The loop's events as OpenAI chat completions: ``chat.completion.chunk`` SSE, or one ``chat.completion``.

Passthrough runs (no server-side tools) forward the provider's chunks as they
are (client tool calls, logprobs, several choices included). Orchestrated runs
send only the answer's text, re-enveloped, and show tool work as SSE comments
(``: plugway tool_call {...}``, ``: plugway tool_result {...}``), which OpenAI
clients ignore.

Usage always arrives with the last data: when the client asked for
``stream_options.include_usage``, in OpenAI's own final chunk (``choices: []``);
when it did not, on the chunk that carries ``finish_reason``, so that the
common ``chunk.choices[0]`` loop never meets an empty ``choices``.
"""

from __future__ import annotations

import time
import uuid

import orjson

from runtime.api import sse
from runtime.gateway import KeepAlive, RunResult
from runtime.json_types import JSON
from runtime.orchestration.events import (
    Completed,
    Event,
    ModelChunk,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    ToolsOffered,
)


def chat_completion(result: RunResult, model_id: str) -> JSON:
    """The non-streamed answer: the final round's response with summed usage and the trace."""
    completed = result.completed
    response = completed.response or {}
    response["model"] = model_id
    response["usage"] = completed.usage
    response["plugway"] = completed.trace
    return response


class ChatStreamEncoder:
    """Turns one run's events into SSE bytes (``None`` when an event shows nothing to the client)."""

    def __init__(self, *, model_id: str, include_usage: bool, choice_index: int = 0) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model_id = model_id
        self.include_usage = include_usage
        # The choice this run's orchestrated text is sent as (n > 1 runs one loop per choice).
        self.choice_index = choice_index
        self.orchestrated = False
        self._sent_role = False
        self._sent_content = False
        self._text_round: int | None = None
        self._held: list[JSON] = []  # passthrough chunks carrying finish_reason, waiting for usage
        # Extra fields for the last data chunk (endpoints add their meta there).
        self.final_fields: JSON = {}

    def encode(self, event: Event | KeepAlive) -> bytes | None:
        if isinstance(event, ModelChunk):
            return self._orchestrated_text(event) if self.orchestrated else self._passthrough(event.chunk)
        if isinstance(event, KeepAlive):
            return sse.KEEP_ALIVE_COMMENT
        if isinstance(event, ToolsOffered):
            self.orchestrated = True
            return None
        if isinstance(event, ToolCallStarted):
            started: JSON = {"round": event.round, "name": event.name}
            if event.script is not None or event.parent_call_id is not None:
                # Code mode: a script run shows its script; a call it made names the run (its call_id).
                started["call_id"] = event.call_id
                started.update({"script": event.script} if event.script is not None else {"parent_call_id": event.parent_call_id})
            return sse.comment("plugway tool_call " + orjson.dumps(started).decode())
        if isinstance(event, ToolCallFinished):
            finished = event.trace()
            if event.parent_call_id is not None:
                finished["parent_call_id"] = event.parent_call_id
            return sse.comment("plugway tool_result " + orjson.dumps(finished).decode())
        if isinstance(event, ToolProgress):
            return sse.tool_progress(event.report())
        if isinstance(event, Completed):
            return self._completed(event)
        return None

    # -- passthrough ------------------------------------------------------------------

    def _passthrough(self, chunk: JSON) -> bytes | None:
        choices = chunk.get("choices")
        if not choices:
            return None  # the provider's usage chunk: usage is sent once, summed, at the end
        out = {**chunk, "id": self.id, "model": self.model_id}
        if not self.include_usage and out.get("usage", 0) is None:
            del out["usage"]
        if any(choice.get("finish_reason") for choice in choices) and not self.include_usage:
            self._held.append(out)
            return None
        return sse.data(out)

    # -- orchestrated -----------------------------------------------------------------

    def _envelope(self, choices: list[JSON]) -> JSON:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id, "choices": choices}

    def _content(self, delta: JSON) -> JSON:
        return self._envelope([{"index": self.choice_index, "delta": delta, "finish_reason": None, "logprobs": None}])

    def _orchestrated_text(self, event: ModelChunk) -> bytes | None:
        text = event.text
        if not text:
            return None
        out = b""
        if not self._sent_role:
            out += sse.data(self._content({"role": "assistant", "content": ""}))
            self._sent_role = True
        if self._sent_content and self._text_round != event.round:
            # A new round's text follows an earlier round's: keep them apart.
            out += sse.data(self._content({"content": "\n\n"}))
        self._sent_content = True
        self._text_round = event.round
        return out + sse.data(self._content({"content": text}))

    # -- the end ----------------------------------------------------------------------

    def finish(self, completed: Completed) -> tuple[bytes, list[JSON]]:
        """What is sent now at the run's end, and the chunks that carry ``finish_reason`` (held
        back so that usage can ride with, or after, them)."""
        out = b""
        if self.orchestrated:
            if not self._sent_role:
                out += sse.data(self._content({"role": "assistant", "content": ""}))
            reason = "stop" if completed.finish_reason in (None, "tool_calls") else completed.finish_reason
            self._held.append(
                self._envelope([{"index": self.choice_index, "delta": {}, "finish_reason": reason, "logprobs": None}])
            )
        held, self._held = self._held, []
        return out, held

    def _completed(self, completed: Completed) -> bytes:
        out, self._held = self.finish(completed)
        if self.include_usage:
            out += b"".join(sse.data(chunk) for chunk in self._held)
            usage_chunk = self._envelope([])
            usage_chunk["usage"] = completed.usage
            usage_chunk["plugway"] = completed.trace
            usage_chunk.update(self.final_fields)
            return out + sse.data(usage_chunk)
        if self._held:
            last = self._held[-1]
            last["usage"] = completed.usage
            last["plugway"] = completed.trace
            last.update(self.final_fields)
        return out + b"".join(sse.data(chunk) for chunk in self._held)


class ChoicesStreamEncoder:
    """``n`` > 1 with server-side tools, streamed: ``n`` runs, one choice each, as one stream.

    Each run's text goes out as its own choice as it comes; the chunks that carry each
    choice's ``finish_reason`` are held until every run has ended, then sent with the
    summed usage (on the last of them, or in OpenAI's own ``choices: []`` chunk when the
    client asked for ``include_usage``), and ``plugway`` holds every choice's trace.
    """

    def __init__(self, *, model_id: str, include_usage: bool, choices: int) -> None:
        self.include_usage = include_usage
        self.encoders = [ChatStreamEncoder(model_id=model_id, include_usage=True, choice_index=i) for i in range(choices)]
        first = self.encoders[0]
        for encoder in self.encoders[1:]:
            encoder.id, encoder.created = first.id, first.created
        self._held: list[JSON] = []
        self._completed: dict[int, Completed] = {}

    def encode(self, index: int, event: Event | KeepAlive) -> bytes | None:
        encoder = self.encoders[index]
        if not isinstance(event, Completed):
            return encoder.encode(event)
        out, held = encoder.finish(event)
        self._held.extend(held)
        self._completed[index] = event
        if len(self._completed) < len(self.encoders):
            return out or None
        return out + self._end()

    def _end(self) -> bytes:
        ended = [self._completed[index] for index in range(len(self.encoders))]
        usage = summed_usage([completed.usage for completed in ended])
        trace = {**ended[0].trace, "choices": [completed.trace for completed in ended]}
        if self.include_usage or not self._held:
            usage_chunk = self.encoders[0]._envelope([])
            usage_chunk.update(usage=usage, plugway=trace)
            return b"".join(sse.data(chunk) for chunk in self._held) + sse.data(usage_chunk)
        self._held[-1].update(usage=usage, plugway=trace)
        return b"".join(sse.data(chunk) for chunk in self._held)


def summed_usage(usages: list[JSON]) -> JSON:
    """Usage objects added up field by field (nested details too)."""
    total: JSON = {}
    for usage in usages:
        for name, value in (usage or {}).items():
            if isinstance(value, dict):
                total[name] = summed_usage([total.get(name) or {}, value])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
            else:
                total.setdefault(name, value)
    return total
