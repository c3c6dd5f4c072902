"""The loop's events as a Responses API response: output items, and the semantic stream events.

One encoder serves both modes: it builds the Response object as events arrive,
and returns the stream events each one produces (with ``sequence_number``);
a non-streamed request simply ignores them and returns the finished object.

Output items, in the order things happened: an ``mcp_list_tools`` item per
plugin (the first time the plugin appears in a response chain), a ``message``
item per round that produced text, an ``mcp_call`` item per server-side tool
call (``server_label`` = plugin id, ``name`` = the tool's own name), then
``mcp_approval_request`` items when calls wait for approval, or
``function_call`` items when the model called the client's own tools.

The model's native items (reasoning items, hosted or custom tools' calls, carried as
reasoning parts of protocol ``openai-responses``: :mod:`runtime.reasoning`) are output
items of their own, verbatim, in the order the model produced them, streamed with
OpenAI's events (``response.reasoning_summary_part.added``, ``…text.delta``, ``…done``);
``encrypted_content`` only when the client's ``include`` asked for it. An
Anthropic model's signed thinking goes out the same way, each block inside a
reasoning item (its text as the summary, the block in ``encrypted_content``:
:func:`runtime.reasoning.as_responses_items`), so a stateless client echoes it back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from runtime.json_types import JSON
from runtime.orchestration.events import (
    ApprovalRequired,
    Completed,
    Event,
    ModelChunk,
    ModelTurn,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    ToolsOffered,
)
from runtime.providers.openai_responses import free_input
from runtime.reasoning import as_responses_items


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_usage(usage: JSON) -> JSON:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "input_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0), "cache_write_tokens": 0},
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "output_tokens_details": {"reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


def _delta(chunk: JSON) -> JSON:
    for choice in chunk.get("choices") or ():
        if choice.get("index", 0) == 0:
            return choice.get("delta") or {}
    return {}


# A hosted tool's call (run by a Responses-native upstream) and the status events OpenAI streams for it.
HOSTED_CALL_STAGES: dict[str, tuple[str, ...]] = {
    "web_search_call": ("in_progress", "searching", "completed"),
    "file_search_call": ("in_progress", "searching", "completed"),
    "code_interpreter_call": ("in_progress", "interpreting", "completed"),
    "image_generation_call": ("in_progress", "generating", "completed"),
}


class ResponsesEncoder:
    def __init__(
        self,
        *,
        model_id: str,
        echo: JSON,
        listed: set[str] | None = None,
        namespaced: dict[str, tuple[str, str]] | None = None,
        include_encrypted: bool = False,
        input_items: list[JSON] | None = None,
        customs: set[str] | None = None,
    ) -> None:
        self.response: JSON = {
            "id": _id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "model": model_id,
            "output": [],
            "usage": None,
            **echo,
        }
        self.listed: set[str] = set(listed or ())
        self.approval_requests: dict[str, str] = {}  # approval request item id -> call id
        self.pending_turn: JSON | None = None
        self._sequence = 0
        self._message: JSON | None = None  # the message item being streamed
        self._message_index = 0
        self._mcp: dict[str, JSON] = {}  # call id -> mcp_call item
        # A flattened namespace tool's name -> (namespace, name): its calls go back as the client named them.
        self.namespaced = namespaced or {}
        self.include_encrypted = include_encrypted
        # The client's custom (free-form) tools: their calls go back as custom_tool_call items.
        self.customs = customs or set()
        self.input_items = input_items or []
        self._shown: set[object] = set()  # native parts already output (by item id, else identity)

    @property
    def output(self) -> list[JSON]:
        return self.response["output"]  # type: ignore[no-any-return]

    def _event(self, kind: str, **fields: Any) -> JSON:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self) -> JSON:
        return {**self.response, "output": list(self.output)}

    # -- the stream's first and last events -----------------------------------------------------

    def start(self) -> list[JSON]:
        return [self._event("response.created", response=self._snapshot()), self._event("response.in_progress", response=self._snapshot())]

    def failed(self, code: str, message: str, param: str | None = None) -> list[JSON]:
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        return [
            self._event("error", code=code, message=message, param=param),
            self._event("response.failed", response=self._snapshot()),
        ]

    # -- events -----------------------------------------------------------------------------------

    def encode(self, event: Event) -> list[JSON]:
        if isinstance(event, ModelChunk):
            out = self._native_parts(_delta(event.chunk))
            text = event.text
            return out + self._text(text) if text else out
        if isinstance(event, ModelTurn):
            out = self._native_parts(event.message)
            content = event.message.get("content")
            if self._message is None and isinstance(content, str) and content:
                out.extend(self._text(content))  # a non-streamed round
            return out + self._close_message()
        if isinstance(event, ToolsOffered):
            return self._list_tools(event)
        if isinstance(event, ToolCallStarted) and event.script is not None:
            return self._script_started(event)
        if isinstance(event, ToolCallFinished) and event.script is not None:
            return self._script_finished(event)
        if isinstance(event, ToolCallStarted):
            return [] if event.builtin else self._mcp_started(event)
        if isinstance(event, ToolCallFinished):
            return [] if event.builtin else self._mcp_finished(event)
        if isinstance(event, ApprovalRequired):
            return self._approvals(event)
        if isinstance(event, Completed):
            return self._completed(event)
        return []

    def progress(self, event: ToolProgress) -> JSON:
        """A tool's progress report, as chat completions' ``plugway tool_progress`` comment
        carries it, plus the ``mcp_call`` item it belongs to. The Responses API has no
        progress event, so the stream sends it as an SSE comment, which SDKs skip."""
        item = self._mcp.get(event.call_id)
        return {**event.report(), "item_id": item["id"] if item is not None else None}

    def _native_parts(self, message: JSON) -> list[JSON]:
        """The model's native items not output yet (a streamed round's come in its chunks)."""
        out: list[JSON] = []
        for part in as_responses_items(message):
            key = part["id"] if isinstance(part.get("id"), str) else id(part)
            if key in self._shown:
                continue
            self._shown.add(key)
            out.extend(self._close_message())
            out.extend(self._native_item(part))
        return out

    def _native_item(self, part: JSON) -> list[JSON]:
        item = dict(part)
        if not self.include_encrypted:
            item.pop("encrypted_content", None)
        index = self._add(item)
        stages = HOSTED_CALL_STAGES.get(str(item.get("type")))
        if stages is not None:
            return self._hosted_call(item, index, stages)
        if item.get("type") != "reasoning":
            return [
                self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        item_id = item.get("id")
        out = [self._event("response.output_item.added", output_index=index, item={**item, "summary": [], "status": "in_progress"})]
        for number, summary in enumerate(item.get("summary") or ()):
            text = str(summary.get("text") or "") if isinstance(summary, dict) else ""
            common = {"item_id": item_id, "output_index": index, "summary_index": number}
            out.append(self._event("response.reasoning_summary_part.added", **common, part={"type": "summary_text", "text": ""}))
            out.append(self._event("response.reasoning_summary_text.delta", **common, delta=text))
            out.append(self._event("response.reasoning_summary_text.done", **common, text=text))
            out.append(self._event("response.reasoning_summary_part.done", **common, part={"type": "summary_text", "text": text}))
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _hosted_call(self, item: JSON, index: int, stages: tuple[str, ...]) -> list[JSON]:
        """A hosted tool's call the upstream ran, with the status events OpenAI sends around it
        (it reaches plugway whole, so they go out together)."""
        kind = str(item["type"])
        common = {"item_id": item.get("id"), "output_index": index}
        out = [self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"} if "status" in item else item)]
        out.append(self._event(f"response.{kind}.{stages[0]}", **common))
        if kind == "code_interpreter_call" and isinstance(item.get("code"), str):
            out.append(self._event("response.code_interpreter_call_code.delta", **common, delta=item["code"]))
            out.append(self._event("response.code_interpreter_call_code.done", **common, code=item["code"]))
        out.extend(self._event(f"response.{kind}.{stage}", **common) for stage in stages[1:])
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _add(self, item: JSON) -> int:
        self.output.append(item)
        return len(self.output) - 1

    def _text(self, text: str) -> list[JSON]:
        out = []
        if self._message is None:
            self._message = {"id": _id("msg"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            index = self._message_index = self._add(self._message)
            out.append(self._event("response.output_item.added", output_index=index, item={**self._message, "content": []}))
            self._message["content"].append({"type": "output_text", "text": "", "annotations": []})
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message["id"],
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
            )
        part = self._message["content"][0]
        part["text"] += text
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message["id"],
                output_index=self._message_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _close_message(self) -> list[JSON]:
        message = self._message
        if message is None:
            return []
        self._message = None
        message["status"] = "completed"
        index = self._message_index
        part = message["content"][0]
        return [
            self._event("response.output_text.done", item_id=message["id"], output_index=index, content_index=0, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", item_id=message["id"], output_index=index, content_index=0, part=dict(part)),
            self._event("response.output_item.done", output_index=index, item=dict(message)),
        ]

    def _list_tools(self, event: ToolsOffered) -> list[JSON]:
        by_plugin: dict[str, list[JSON]] = {}
        for tool in event.tools:
            entry: JSON = {"name": tool.tool_name, "description": tool.description, "input_schema": tool.parameters}
            if tool.annotations:
                entry["annotations"] = tool.annotations
            by_plugin.setdefault(tool.plugin_id, []).append(entry)
        out = []
        for plugin_id, tools in by_plugin.items():
            if plugin_id in self.listed:
                continue
            self.listed.add(plugin_id)
            item = {"id": _id("mcpl"), "type": "mcp_list_tools", "server_label": plugin_id, "tools": tools}
            index = self._add(item)
            out.append(self._event("response.output_item.added", output_index=index, item={**item, "tools": []}))
            out.append(self._event("response.mcp_list_tools.in_progress", item_id=item["id"], output_index=index))
            out.append(self._event("response.mcp_list_tools.completed", item_id=item["id"], output_index=index))
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _mcp_started(self, event: ToolCallStarted) -> list[JSON]:
        label = event.plugin_id or event.name.partition("__")[0]
        item = {
            "id": _id("mcp"),
            "type": "mcp_call",
            "server_label": label,
            "name": event.tool_name or event.name,
            "arguments": event.arguments,
            "output": None,
            "error": None,
            "status": "in_progress",
        }
        self._mcp[event.call_id] = item
        index = self._add(item)
        return [
            self._event("response.output_item.added", output_index=index, item={**item, "arguments": ""}),
            self._event("response.mcp_call_arguments.delta", item_id=item["id"], output_index=index, delta=event.arguments),
            self._event("response.mcp_call_arguments.done", item_id=item["id"], output_index=index, arguments=event.arguments),
            self._event("response.mcp_call.in_progress", item_id=item["id"], output_index=index),
        ]

    def _mcp_finished(self, event: ToolCallFinished) -> list[JSON]:
        item = self._mcp.get(event.call_id)
        if item is None:
            return []
        index = self.output.index(item)
        if event.ok:
            item["output"] = event.content
            item["status"] = "completed"
        else:
            item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": event.content}]}
            item["status"] = "failed"
        kind = "response.mcp_call.completed" if event.ok else "response.mcp_call.failed"
        return [self._event(kind, item_id=item["id"], output_index=index), self._event("response.output_item.done", output_index=index, item=dict(item))]

    def _script_started(self, event: ToolCallStarted) -> list[JSON]:
        """Code mode's script run as a ``code_interpreter_call`` item; the calls it makes follow as ``mcp_call`` items."""
        item: JSON = {"id": _id("ci"), "type": "code_interpreter_call", "code": event.script, "container_id": "plugway-monty", "outputs": None, "status": "interpreting"}
        self._mcp[event.call_id] = item
        index = self._add(item)
        return [
            self._event("response.output_item.added", output_index=index, item={**item, "code": "", "status": "in_progress"}),
            self._event("response.code_interpreter_call.in_progress", item_id=item["id"], output_index=index),
            self._event("response.code_interpreter_call_code.delta", item_id=item["id"], output_index=index, delta=event.script or ""),
            self._event("response.code_interpreter_call_code.done", item_id=item["id"], output_index=index, code=event.script or ""),
            self._event("response.code_interpreter_call.interpreting", item_id=item["id"], output_index=index),
        ]

    def _script_finished(self, event: ToolCallFinished) -> list[JSON]:
        item = self._mcp.get(event.call_id)
        if item is None:
            return []
        index = self.output.index(item)
        item["outputs"] = [{"type": "logs", "logs": event.content}]
        item["status"] = "completed" if event.ok else "failed"
        return [
            self._event("response.code_interpreter_call.completed", item_id=item["id"], output_index=index),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def _approvals(self, event: ApprovalRequired) -> list[JSON]:
        out = self._close_message()
        self.pending_turn = event.assistant_message
        for call in event.calls:
            item = {"id": _id("mcpr"), "type": "mcp_approval_request", "server_label": call.plugin_id, "name": call.tool_name, "arguments": call.arguments}
            self.approval_requests[item["id"]] = call.call_id
            index = self._add(item)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _completed(self, completed: Completed) -> list[JSON]:
        out = self._close_message()
        if completed.stopped_by in ("client_tools", "answer"):
            for call in completed.message.get("tool_calls") or ():
                function = call.get("function") or {}
                arguments = function.get("arguments") or ""
                if (function.get("name") or "") in self.customs:
                    out.extend(self._custom_call(call, function.get("name") or "", arguments))
                    continue
                item = {
                    "id": _id("fc"),
                    "type": "function_call",
                    "call_id": call.get("id") or _id("call"),
                    "name": function.get("name") or "",
                    "arguments": arguments,
                    "status": "completed",
                }
                if item["name"] in self.namespaced:
                    item["namespace"], item["name"] = self.namespaced[item["name"]]
                index = self._add(item)
                out.append(self._event("response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"}))
                out.append(self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments))
                out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments))
                out.append(self._event("response.output_item.done", output_index=index, item=item))
        self.response["usage"] = response_usage(completed.usage)
        if completed.finish_reason == "length":
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
            out.append(self._event("response.incomplete", response=self._snapshot()))
        else:
            self.response["status"] = "completed"
            self.response["completed_at"] = int(time.time())
            out.append(self._event("response.completed", response=self._snapshot()))
        return out

    def _custom_call(self, call: JSON, name: str, arguments: str) -> list[JSON]:
        free = free_input(arguments)
        item: JSON = {"id": _id("ctc"), "type": "custom_tool_call", "call_id": call.get("id") or _id("call"), "name": name, "input": free, "status": "completed"}
        if name in self.namespaced:
            item["namespace"], item["name"] = self.namespaced[name]
        index = self._add(item)
        return [
            self._event("response.output_item.added", output_index=index, item={**item, "input": "", "status": "in_progress"}),
            self._event("response.custom_tool_call_input.delta", item_id=item["id"], output_index=index, delta=free),
            self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=free),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def state(self, completed: Completed | None) -> JSON:
        """What a continuation needs: the conversation, calls waiting for approval, listed plugins."""
        state: JSON = {"messages": completed.messages if completed else [], "listed": sorted(self.listed), "input_items": self.input_items}
        if self.pending_turn is not None:
            state["pending"] = {"assistant_message": self.pending_turn, "approval_requests": self.approval_requests}
        return state
