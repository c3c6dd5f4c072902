"""Responses API requests as the runtime's inputs: an OpenAI chat body, plugin requests, resumes.

Shapes follow OpenAI's Responses API (the installed ``openai`` package's
``types/responses`` are the reference). What is translated:

- ``instructions`` → a system message; ``input`` (a string, or items: messages
  with ``input_text`` / ``input_image`` / ``output_text`` parts,
  ``function_call``, ``function_call_output``, ``mcp_call``,
  ``mcp_approval_response``, and a code-mode script's ``code_interpreter_call``,
  whose own ``mcp_call`` items follow it and are left out) → chat messages;
- function tools → chat tools (their calls go back to the client as
  ``function_call`` items); MCP tool entries naming a configured plugin
  (``server_label`` = plugin id; ``server_url`` absent, ``plugway://plugins/<id>``
  or the plugin's own configured URL) → plugin requests, with ``allowed_tools``
  and ``require_approval``;
- ``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``,
  ``tool_choice``, ``text.format``, ``user`` / ``safety_identifier``.

- ``reasoning.effort`` → ``reasoning_effort`` (for chat upstreams that take it, and
  Anthropic models, whose adapter makes it a thinking budget),
  ``prompt_cache_key``, ``prompt_cache_retention``, ``service_tier`` and
  ``text.verbosity`` pass on as chat completions has them;
- a ``namespace`` tool (a group of function tools) → its function tools, named
  ``<namespace>__<name>``; the model's calls go back as ``function_call`` items
  with the ``name`` and ``namespace`` the client gave.

What the chat shape cannot carry (``reasoning.summary``, ``include``,
``client_metadata``, hosted tools such as ``web_search``, unknown fields and
items) is collected in ``ignored`` by path: for a chat upstream the route drops
it and names it, or refuses it under ``unsupported_params: refuse`` (see
:mod:`runtime.frontdoors.carry`). For a Responses-native upstream it all goes
as it is: ``native_fields`` and ``native_tools`` are the client's own request
(see :mod:`runtime.providers.openai_responses`).

Reasoning items in ``input`` (and any other item the chat shape has no place
for: hosted or custom tool calls, ...) ride verbatim on the assistant turn they
belong to as reasoning parts (:mod:`runtime.reasoning`): the next assistant
message or call after them, or an assistant turn of their own. A reasoning item
whose ``encrypted_content`` plugway made to carry an Anthropic model's signed
thinking (:func:`runtime.reasoning.carry`) becomes that thinking again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.config import OrganisationConfig
from runtime.errors import invalid_request, unsupported_parameter
from runtime.json_types import JSON
from runtime.orchestration.code_mode import requested_mode
from runtime.orchestration.naming import public_name
from runtime.reasoning import (
    ANTHROPIC,
    OPENAI_RESPONSES,
    REASONING_PARTS,
    MalformedCarrier,
    from_responses_item,
)
from runtime.request import ApprovalPolicy, PluginRequest, Resume

HANDLED = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
        "temperature", "top_p", "text", "metadata", "store", "previous_response_id", "stream", "user",
        "safety_identifier", "truncation", "include", "background", "reasoning", "stream_options",
        "orchestration_mode", "client_metadata",
    }
)
# Chat completions has these too: they pass on unchanged.
PASSED_ON = ("service_tier", "prompt_cache_key", "prompt_cache_retention")
MAX_OUTPUT_TOKENS = 2**31 - 1
PLUGIN_URL_PREFIX = "plugway://plugins/"
# The door's own fields: translated into the run, never forwarded as they are.
DOOR_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "stream", "stream_options", "previous_response_id",
        "store", "background", "orchestration_mode", "enabled_plugin_ids", "max_output_tokens", "temperature", "top_p",
        "parallel_tool_calls",
    }
)
ENCRYPTED_REASONING = "reasoning.encrypted_content"


@dataclass
class ResponsesRequest:
    """A validated Responses request, in the runtime's terms."""

    model: str
    stream: bool
    store: bool
    body: JSON  # the OpenAI chat body for the loop, without messages of a previous response
    input_messages: list[JSON]  # this request's own input, as chat messages
    plugins: list[PluginRequest] | None  # None: every plugin of the organisation
    server_tools: bool
    approvals: dict[str, bool] = field(default_factory=dict)  # approval request id -> approved
    previous_response_id: str | None = None
    metadata: JSON | None = None
    echo: JSON = field(default_factory=dict)  # request fields the Response object repeats
    ignored: list[str] = field(default_factory=list)  # fields the chat shape cannot carry, by path
    reasoning_effort: str | None = None  # reasoning.effort, for upstreams that take reasoning_effort
    # A flattened namespace tool's name -> (namespace, the tool's own name), for its calls' items.
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    customs: set[str] = field(default_factory=set)  # chat names of the client's custom (free-form) tools
    lost: list[str] = field(default_factory=list)  # what no upstream gets (content parts the chat shape drops), by path
    native_fields: JSON = field(default_factory=dict)  # the client's fields, for a Responses-native upstream
    native_tools: list[JSON] = field(default_factory=list)  # the client's tools but plugins, as they came
    include_encrypted: bool = False  # the client asked for reasoning.encrypted_content
    input_items: list[JSON] = field(default_factory=list)  # this request's input, as items with ids
    # Input items carrying Anthropic's signed thinking (runtime.reasoning): only an Anthropic model takes them back.
    carried_anthropic: list[str] = field(default_factory=list)

    def resume(self, pending: JSON | None) -> Resume | None:
        """The approvals this request answers, against the previous response's pending calls."""
        if not pending or not self.approvals:
            return None
        by_request = pending.get("approval_requests") or {}
        decisions = {call_id: self.approvals[request_id] for request_id, call_id in by_request.items() if request_id in self.approvals}
        unknown = set(self.approvals) - set(by_request)
        if unknown:
            raise invalid_request(f"No pending approval request '{sorted(unknown)[0]}' in the previous response.", param="input")
        return Resume(assistant_message=pending["assistant_message"], approvals=decisions)


def _string(body: JSON, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"'{name}' must be a string.", param=name)
    return value


def _number(body: JSON, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid_request(f"'{name}' must be a number from {low:g} to {high:g}.", param=name)
    return value


def parse_request(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    ignored = [name for name in body if name not in HANDLED and name not in PASSED_ON]
    if body.get("client_metadata") is not None:
        ignored.append("client_metadata")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    store = body.get("store", True)
    if store is not None and not isinstance(store, bool):
        raise invalid_request("'store' must be a boolean.", param="store")
    if body.get("background"):
        raise unsupported_parameter("background", "Background responses are not supported; use stream: true.")
    reasoning_effort = _reasoning(body.get("reasoning"), ignored)
    if body.get("truncation") not in (None, "disabled"):
        ignored.append("truncation")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(entry, str) for entry in include):
            raise invalid_request("'include' must be an array of strings.", param="include")
        # Reasoning items, logprobs, sources of hosted tools: none of them come back from a chat upstream.
        ignored.extend(f"include[{i}]" for i in range(len(include)))
    if body.get("stream_options") is not None and not stream:
        raise invalid_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or len(metadata) > 16 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise invalid_request("'metadata' must be an object of at most 16 string values.", param="metadata")
    previous = _string(body, "previous_response_id")

    chat: JSON = {"model": model}
    mode = requested_mode(body)
    if mode is not None:
        chat["orchestration_mode"] = mode
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
            raise invalid_request(f"'max_output_tokens' must be an integer from 1 to {MAX_OUTPUT_TOKENS}.", param="max_output_tokens")
        chat["max_completion_tokens"] = max_tokens
    for name, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = _number(body, name, 0.0, high)
        if value is not None:
            chat[name] = value
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise invalid_request("'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls")
        chat["parallel_tool_calls"] = parallel
    user = _string(body, "safety_identifier") or _string(body, "user")
    if user:
        chat["user"] = user
    for name in PASSED_ON:
        if body.get(name) is not None:
            chat[name] = body[name]
    response_format = _text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    verbosity = (body.get("text") or {}).get("verbosity")
    if verbosity is not None:
        chat["verbosity"] = verbosity

    namespaced: dict[str, tuple[str, str]] = {}
    customs: set[str] = set()
    function_tools, plugins, mcp_entries = _tools(body.get("tools"), ignored, namespaced, customs)
    _namespaces_in_items(body.get("input"), namespaced)
    # Tools an input item makes available (additional_tools) are the request's tools for a chat upstream.
    given = body.get("input")
    for i, item in enumerate(given if isinstance(given, list) else []):
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            function_tools += _tools(item.get("tools"), ignored, namespaced, customs, prefix=f"input[{i}].tools")[0]
    if function_tools:
        chat["tools"] = function_tools
    tool_choice = _tool_choice(body.get("tool_choice"), ignored)
    if tool_choice is not None:
        chat["tool_choice"] = tool_choice

    messages: list[JSON] = []
    instructions = _string(body, "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    lost: list[str] = []
    carried_anthropic: list[str] = []
    input_messages, approvals = _input(body.get("input"), ignored, lost, carried_anthropic)
    messages.extend(input_messages)
    if not messages and not approvals and previous is None:
        raise invalid_request("'input' is required.", param="input")

    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "metadata": metadata or {},
        "parallel_tool_calls": parallel if parallel is not None else True,
        "temperature": chat.get("temperature"),
        "top_p": chat.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "user": body.get("user"),
        "previous_response_id": previous,
        "truncation": "disabled",
    }
    return ResponsesRequest(
        model=model,
        stream=bool(stream),
        store=store is not False,
        body=chat,
        input_messages=messages,
        # No tools of any kind: every plugin of the organisation, as on chat completions.
        plugins=plugins if mcp_entries else None,
        server_tools=mcp_entries or not function_tools,
        approvals=approvals,
        previous_response_id=previous,
        metadata=metadata,
        echo=echo,
        ignored=ignored,
        reasoning_effort=reasoning_effort,
        namespaced=namespaced,
        customs=customs,
        lost=lost,
        native_fields=_native_fields(body),
        native_tools=[tool for tool in body.get("tools") or () if isinstance(tool, dict) and tool.get("type") != "mcp"],
        include_encrypted=ENCRYPTED_REASONING in (include or ()),
        carried_anthropic=carried_anthropic,
        input_items=_items_with_ids(body.get("input")) if store is not False else [],  # kept only for a stored response
    )


def _namespaces_in_items(value: Any, namespaced: dict[str, tuple[str, str]]) -> None:
    """Namespace tools that input items hand the model (a client-side ``tool_search_output``,
    Codex's ``additional_tools``): their calls go back with their namespace too."""
    for item in value if isinstance(value, list) else ():
        for tool in (item.get("tools") if isinstance(item, dict) else None) or ():
            if isinstance(tool, dict) and tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
                for member in tool.get("tools") or ():
                    if isinstance(member, dict) and isinstance(member.get("name"), str):
                        namespaced[public_name(tool["name"], member["name"])] = (tool["name"], member["name"])


def _native_fields(body: JSON) -> JSON:
    fields = {key: value for key, value in body.items() if key not in DOOR_FIELDS}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "mcp"):
        fields["tool_choice"] = choice  # a hosted tool's: only a Responses upstream can be told
    return fields


def _items_with_ids(value: Any) -> list[JSON]:
    """The request's input as items (``GET /v1/responses/{id}/input_items``), each with an id."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    items: list[JSON] = []
    for item in value or ():
        if isinstance(item, dict):
            item = {"type": "message", **item}
            if not isinstance(item.get("id"), str):
                item["id"] = f"{'msg' if item['type'] == 'message' else 'item'}_{uuid.uuid4().hex}"
            if item["type"] == "message" and isinstance(item.get("content"), str):
                kind = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": kind, "text": item["content"]}]
            items.append(item)
    return items


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def _reasoning(reasoning: Any, ignored: list[str]) -> str | None:
    """``reasoning.effort`` (which maps onto chat's ``reasoning_effort``); the rest is ignored."""
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise invalid_request("'reasoning' must be an object.", param="reasoning")
    effort = reasoning.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid_request(f"'reasoning.effort' must be one of {', '.join(REASONING_EFFORTS)}.", param="reasoning.effort")
    # A summary of the reasoning, or its encrypted state, never comes back through chat completions.
    ignored.extend(f"reasoning.{key}" for key, value in reasoning.items() if key != "effort" and value is not None)
    return effort  # type: ignore[no-any-return]


def _text_format(text: Any) -> JSON | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid_request("'text' must be an object.", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict) or not isinstance(fmt.get("name"), str):
            raise invalid_request("'text.format' json_schema needs a 'name' and a 'schema' object.", param="text.format")
        json_schema: JSON = {"name": fmt["name"], "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                json_schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": json_schema}
    raise invalid_request("'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text.format")


def _approval(value: Any, param: str) -> ApprovalPolicy:
    if value is None or value == "always":
        # OpenAI's default for hosted MCP servers is to ask.
        return ApprovalPolicy(default=True)
    if value == "never":
        return ApprovalPolicy(default=False)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"always", "never"})
        if unknown:
            raise invalid_request(f"'require_approval' takes 'always' and 'never', not '{unknown[0][:64]}'.", param=param)

        def names(key: str) -> frozenset[str]:
            entry = value.get(key)
            if entry is None:
                return frozenset()
            if not isinstance(entry, dict):
                raise invalid_request(f"'require_approval.{key}' must be an object such as {{\"tool_names\": [...]}}.", param=param)
            listed = entry.get("tool_names")
            if listed is not None and not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
                raise invalid_request(f"'require_approval.{key}.tool_names' must be an array of strings.", param=param)
            return frozenset(listed or ())

        always, never = names("always"), names("never")
        # Tools named under neither: like OpenAI, approval unless only "always" names tools.
        return ApprovalPolicy(default=bool(never) or not always, always=always, never=never)
    raise invalid_request("'require_approval' must be 'always', 'never' or an object.", param=param)


def _function_tool(tool: JSON, param: str, name: str) -> JSON:
    function: JSON = {"name": name, "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def custom_tool(tool: JSON, name: str) -> JSON:
    """A custom (free-form input) tool as a chat function taking its input as one string, ``input``."""
    description = str(tool.get("description") or "")
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": (description + "\n\n" if description else "") + "Free-form tool: pass its whole input as the string 'input'.",
            "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's free-form input."}}, "required": ["input"]},
        },
    }


def _custom(tool: JSON, param: str, name: str, ignored: list[str], customs: set[str]) -> JSON:
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        ignored.append(f"{param}.format")  # a grammar a chat upstream cannot be held to
    customs.add(name)
    return custom_tool(tool, name)


def _tools(
    tools: Any, ignored: list[str], namespaced: dict[str, tuple[str, str]], customs: set[str], *, prefix: str = "tools"
) -> tuple[list[JSON], list[PluginRequest], bool]:
    if tools is None:
        return [], [], False
    if not isinstance(tools, list):
        raise invalid_request(f"'{prefix}' must be an array.", param=prefix)
    functions: list[JSON] = []
    plugins: list[PluginRequest] = []
    mcp = False
    for i, tool in enumerate(tools):
        param = f"{prefix}[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "custom":
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise invalid_request("A custom tool needs a 'name'.", param=f"{param}.name")
            functions.append(_custom(tool, param, name, ignored, customs))
        elif kind == "function":
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise invalid_request("A function tool needs a 'name'.", param=f"{param}.name")
            functions.append(_function_tool(tool, param, name))
        elif kind == "namespace":
            namespace, members = tool.get("name"), tool.get("tools")
            if not isinstance(namespace, str) or not namespace:
                raise invalid_request("A namespace tool needs a 'name'.", param=f"{param}.name")
            if not isinstance(members, list):
                raise invalid_request("A namespace tool needs 'tools' (an array).", param=f"{param}.tools")
            for j, member in enumerate(members):
                member_param = f"{param}.tools[{j}]"
                if not isinstance(member, dict) or member.get("type", "function") not in ("function", "custom"):
                    ignored.append(member_param)
                    continue
                name = member.get("name")
                if not isinstance(name, str) or not name:
                    raise invalid_request("A function tool needs a 'name'.", param=f"{member_param}.name")
                # Chat tools have no namespaces: the group becomes its functions, the names qualified.
                flat = public_name(namespace, name)
                namespaced[flat] = (namespace, name)
                if member.get("type") == "custom":
                    functions.append(_custom(member, member_param, flat, ignored, customs))
                else:
                    functions.append(_function_tool(member, member_param, flat))
        elif kind == "mcp":
            mcp = True
            label = tool.get("server_label")
            if not isinstance(label, str) or not label:
                raise invalid_request("An MCP tool needs a 'server_label' (the plugin id).", param=f"{param}.server_label")
            if tool.get("connector_id") is not None:
                raise unsupported_parameter(f"{param}.connector_id", "Connectors are not supported; name a configured plugin.")
            allowed = tool.get("allowed_tools")
            if isinstance(allowed, dict):
                allowed = allowed.get("tool_names")
            if allowed is not None and not (isinstance(allowed, list) and all(isinstance(n, str) for n in allowed)):
                raise invalid_request("'allowed_tools' must be an array of tool names.", param=f"{param}.allowed_tools")
            plugins.append(
                PluginRequest(
                    label,
                    param=f"{param}.server_label",
                    allowed_tools=frozenset(allowed) if allowed is not None else None,
                    approval=_approval(tool.get("require_approval"), f"{param}.require_approval"),
                )
            )
        elif isinstance(kind, str):
            # Hosted tools (web_search, file_search, code_interpreter, ...) run at OpenAI, not behind a chat upstream.
            ignored.append(param)
        else:
            raise invalid_request("Each tool needs a 'type'.", param=f"{param}.type")
    return functions, plugins, mcp


def check_server_urls(tools: Any, organisation: OrganisationConfig) -> None:
    """An MCP entry's ``server_url`` must be plugway's own address of the plugin, or its configured URL."""
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") != "mcp" or tool.get("server_url") is None:
            continue
        label, url = tool.get("server_label"), tool.get("server_url")
        ref = organisation.plugin(str(label))
        configured = ref.mcp.url if ref is not None and ref.mcp is not None else None
        if url not in (f"{PLUGIN_URL_PREFIX}{label}", configured):
            raise invalid_request(
                f"'server_url' {url!r} is not a plugin configured for this organisation; use '{PLUGIN_URL_PREFIX}{label}' or leave it out.",
                param=f"tools[{i}].server_url",
            )


def _tool_choice(choice: Any, ignored: list[str]) -> Any:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function" and isinstance(choice.get("name"), str):
            name = choice["name"] if not isinstance(choice.get("namespace"), str) else public_name(choice["namespace"], choice["name"])
            return {"type": "function", "function": {"name": name}}
        if kind == "mcp" and isinstance(choice.get("server_label"), str):
            if isinstance(choice.get("name"), str):
                return {"type": "function", "function": {"name": public_name(choice["server_label"], choice["name"])}}
            return "required"
        if isinstance(kind, str) and kind not in ("function", "mcp"):
            # A hosted tool, or allowed_tools: nothing a chat upstream can be told.
            ignored.append("tool_choice")
            return None
    raise invalid_request("'tool_choice' must be 'none', 'auto', 'required', a function or an MCP tool.", param="tool_choice")


def _content(content: Any, role: str, param: str, lost: list[str]) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_request("'content' must be a string or an array of parts.", param=param)
    parts: list[JSON] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        part_param = f"{param}[{j}]"
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid_request("A text part needs 'text' (a string).", param=f"{part_param}.text")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise unsupported_parameter(f"{part_param}.image_url", "Images must be given as 'image_url' (a data: or https URL); file ids are not supported.")
            image: JSON = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            data = part.get("file_data")
            if not isinstance(data, str):
                raise unsupported_parameter(part_param, "Files must be given inline as 'file_data'.")
            parts.append({"type": "file", "file": {"file_data": data, "filename": part.get("filename") or "file"}})
        elif isinstance(kind, str):
            lost.append(part_param)
        else:
            raise invalid_request("Each content part needs a 'type'.", param=f"{part_param}.type")
    if role == "assistant":
        return "".join(p["text"] for p in parts if p["type"] == "text")
    return parts


def _input(value: Any, ignored: list[str], lost: list[str], carried_anthropic: list[str]) -> tuple[list[JSON], dict[str, bool]]:
    """Chat messages for the input items, and the approval decisions among them."""
    if value is None:
        return [], {}
    if isinstance(value, str):
        return [{"role": "user", "content": value}], {}
    if not isinstance(value, list):
        raise invalid_request("'input' must be a string or an array of items.", param="input")
    messages: list[JSON] = []
    approvals: dict[str, bool] = {}
    pending_calls: list[JSON] = []  # consecutive function_call / mcp_call items form one assistant turn
    # Reasoning (and other native) items as reasoning parts, for the assistant turn they precede.
    pending_parts: list[JSON] = []
    turn_parts: list[JSON] = []  # those of the turn pending_calls is building
    outputs: list[JSON] = []  # the tool messages answering the calls of the turn being built

    def flush_calls() -> None:
        if pending_calls:
            turn: JSON = {"role": "assistant", "content": None, "tool_calls": list(pending_calls)}
            if turn_parts:
                turn[REASONING_PARTS] = list(turn_parts)
            messages.append(turn)
            pending_calls.clear()
            turn_parts.clear()

    def flush_outputs() -> None:
        """The calls so far and their outputs, before an item that starts something new."""
        if outputs:
            flush_calls()
            messages.extend(outputs)
            outputs.clear()

    def start_call() -> None:
        turn_parts.extend(pending_parts)
        pending_parts.clear()

    def flush_parts() -> None:
        """Native items no assistant message or call follows: an assistant turn of their own."""
        if pending_parts:
            messages.append({"role": "assistant", "content": None, REASONING_PARTS: list(pending_parts)})
            pending_parts.clear()

    in_script = False  # the mcp_call items right after a code_interpreter_call are the script's
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_request("Each input item must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "mcp_call" and in_script:
            continue
        in_script = kind == "code_interpreter_call"
        if kind == "code_interpreter_call":
            code, call_id = item.get("code"), item.get("id")
            if not (isinstance(code, str) and isinstance(call_id, str)):
                raise invalid_request("A code_interpreter_call needs 'id' and 'code'.", param=param)
            flush_outputs()
            start_call()
            pending_calls.append({"id": call_id, "type": "function", "function": {"name": public_name("plugway", "run_script"), "arguments": orjson.dumps({"code": code}).decode()}})
            logs = [str(o.get("logs") or "") for o in item.get("outputs") or () if isinstance(o, dict) and o.get("type") == "logs"]
            outputs.append({"role": "tool", "tool_call_id": call_id, "content": "".join(logs)})
        elif kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid_request("A message's 'role' must be user, assistant, system or developer.", param=f"{param}.role")
            flush_calls()
            messages.extend(outputs)
            outputs.clear()
            message: JSON = {"role": role, "content": _content(item.get("content"), role, f"{param}.content", lost)}
            if role == "assistant" and pending_parts:
                message[REASONING_PARTS] = list(pending_parts)
                pending_parts.clear()
            else:
                flush_parts()
            messages.append(message)
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
            if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
                raise invalid_request("A function_call needs 'call_id', 'name' and 'arguments' (strings).", param=param)
            flush_outputs()
            if isinstance(item.get("namespace"), str):
                name = public_name(item["namespace"], name)
            start_call()
            pending_calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind == "mcp_call":
            label, name, arguments = item.get("server_label"), item.get("name"), item.get("arguments", "")
            call_id = item.get("id")
            if not (isinstance(label, str) and isinstance(name, str) and isinstance(arguments, str) and isinstance(call_id, str)):
                raise invalid_request("An mcp_call needs 'id', 'server_label', 'name' and 'arguments'.", param=param)
            flush_outputs()
            start_call()
            pending_calls.append({"id": call_id, "type": "function", "function": {"name": public_name(label, name), "arguments": arguments}})
            result = item.get("output") if item.get("output") is not None else str(item.get("error") or "")
            outputs.append({"role": "tool", "tool_call_id": call_id, "content": str(result)})
        elif kind == "custom_tool_call":
            call_id, name, free = item.get("call_id"), item.get("name"), item.get("input", "")
            if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(free, str)):
                raise invalid_request("A custom_tool_call needs 'call_id', 'name' and 'input' (strings).", param=param)
            flush_outputs()
            if isinstance(item.get("namespace"), str):
                name = public_name(item["namespace"], name)
            start_call()
            pending_calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": orjson.dumps({"input": free}).decode()}})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise invalid_request("A function_call_output needs 'call_id'.", param=f"{param}.call_id")
            if isinstance(output, list):
                output = "".join(str(p.get("text") or "") for p in output if isinstance(p, dict))
            if not isinstance(output, str):
                raise invalid_request("'output' must be a string.", param=f"{param}.output")
            flush_calls()
            flush_parts()
            outputs.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "mcp_approval_response":
            request_id, approve = item.get("approval_request_id"), item.get("approve")
            if not isinstance(request_id, str) or not isinstance(approve, bool):
                raise invalid_request("An mcp_approval_response needs 'approval_request_id' and 'approve'.", param=param)
            approvals[request_id] = approve
        elif kind in ("mcp_list_tools", "mcp_approval_request"):
            continue  # context the model does not need again
        elif kind == "additional_tools":
            # Its tools join the request's tools for a chat upstream (parse_request); a Responses
            # upstream gets the item itself, in its place.
            flush_outputs()
            pending_parts.append({"protocol": OPENAI_RESPONSES, "part": item})
        elif isinstance(kind, str):
            # Reasoning items (their encrypted state), hosted or custom tools' calls, item references:
            # kept verbatim for a Responses upstream; a chat upstream cannot take them back. A
            # reasoning item plugway made to carry Anthropic's thinking goes back to an Anthropic model.
            try:
                part = from_responses_item(item)
            except MalformedCarrier as exc:
                raise invalid_request(f"This encrypted_content was not made by plugway: {exc}.", param=f"{param}.encrypted_content") from None
            (carried_anthropic if part["protocol"] == ANTHROPIC else ignored).append(param)
            flush_outputs()
            pending_parts.append(part)
        else:
            raise invalid_request("Each input item needs a 'type'.", param=f"{param}.type")
    flush_calls()
    messages.extend(outputs)
    flush_parts()
    return messages, approvals
