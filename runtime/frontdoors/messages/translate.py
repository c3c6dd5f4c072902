"""Anthropic Messages requests as the runtime's inputs.

The content mapping itself is shared with the Anthropic provider adapter
(``runtime.providers.anthropic_translate``, its inbound half); this module
validates the request, reads ``mcp_servers`` (Anthropic's MCP connector shape,
naming plugins) and decides between the two paths:

- **native**: a model whose whole fallback chain is Anthropic-kind, with no
  server-side tools to run, gets the client's body as it is (thinking, cache
  control, citations and all), only ``model`` renamed, with the client's
  ``anthropic-beta`` and ``?beta=true``;
- **native through the loop**: the same chain with plugin tools to run goes
  through the orchestration loop, the client's body carried beside the chat
  shape (``NATIVE_CARRY``) so that every round sends it as it came, with the
  loop's own turns (signed thinking first) and the plugin tools added;
- **translated**: everything else runs through the orchestration loop in the
  OpenAI shape and is answered in Anthropic's. What that shape cannot carry
  (``thinking``, ``context_management``, ``output_config.effort``, server
  tools, unknown fields, ...) is listed by :func:`translated_ignored`: dropped
  and named, or refused under ``unsupported_params: refuse``.

A ``role: "system"`` message inside ``messages`` (Anthropic's mid-conversation
system beta) stays a system message in place on the translated path. To a
Responses-native model, ``output_config.effort`` and ``thinking`` become its
``reasoning.effort`` (:func:`reasoning_effort`), and its reasoning items reach a
client that asked for thinking inside thinking blocks it echoes back
(:mod:`runtime.reasoning`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.config import OrganisationConfig
from runtime.errors import invalid_request
from runtime.json_types import JSON
from runtime.orchestration.code_mode import requested_mode
from runtime.orchestration.naming import public_name
from runtime.providers.anthropic_translate import openai_messages, openai_tool_choice, openai_tools
from runtime.reasoning import carries_foreign_parts
from runtime.request import PluginRequest

PLUGIN_URL_PREFIX = "plugway://plugins/"
# The MCP connector's beta (``mcp-client-2025-04-04``, ``mcp-client-2025-11-20``, ...).
MCP_CLIENT_BETA = "mcp-client-"
# Blocks an earlier plugway answer showed for its own server-side work: not Anthropic's to read.
_SERVER_BLOCKS = frozenset({"mcp_tool_use", "mcp_tool_result", "code_execution_tool_result"})
KNOWN = frozenset(
    {
        "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "top_k",
        "stop_sequences", "metadata", "tools", "tool_choice", "mcp_servers", "output_config",
        "orchestration_mode",
    }
)
# Only an Anthropic model can honour these: ignored (and named) when the request is translated.
NATIVE_ONLY = ("thinking", "container", "context_management")
# output_config keys the translated path carries (format becomes response_format).
CARRIED_OUTPUT_CONFIG = frozenset({"format"})
MAX_TOKENS_LIMIT = 2**31 - 1


@dataclass
class MessagesRequest:
    model: str
    stream: bool
    body: JSON  # the client's body, without gateway-only fields (for the native path)
    plugins: list[PluginRequest] | None  # None: every plugin of the organisation
    server_tools: bool
    native_only: list[str]  # fields present, by path, that only the native path can honour
    mode: str | None = None  # plugway's orchestration_mode


def parse_request(body: Any) -> MessagesRequest:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    output_config = body.get("output_config")
    if output_config is not None and not isinstance(output_config, dict):
        raise invalid_request("output_config: must be an object", param="output_config")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Field required (a non-empty string)", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise invalid_request(f"max_tokens: an integer from 1 to {MAX_TOKENS_LIMIT} is required", param="max_tokens")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise invalid_request("messages: at least one message is required", param="messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("stream: must be a boolean", param="stream")
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high):
            raise invalid_request(f"{name}: must be a number from 0 to {high:g}", param=name)
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise invalid_request("top_k: must be a non-negative integer", param="top_k")
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise invalid_request("stop_sequences: must be an array of strings", param="stop_sequences")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or not isinstance(metadata.get("user_id", ""), str | type(None))):
        raise invalid_request("metadata: must be an object with an optional string user_id", param="metadata")
    plugins = _mcp_servers(body.get("mcp_servers"))
    mode = requested_mode(body)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid_request("tools: must be an array", param="tools")
    client_tools = any(not isinstance(t, dict) or t.get("type") in (None, "custom") for t in tools or ())
    native_body = {k: v for k, v in body.items() if k not in ("mcp_servers", "stream", "orchestration_mode")}
    return MessagesRequest(
        model=model,
        stream=bool(stream),
        body=native_body,
        plugins=plugins,
        # As on chat completions: no tools at all means every plugin; MCP servers name some.
        server_tools=plugins is not None or not client_tools,
        native_only=_native_only(body),
        mode=mode,
    )


def _native_only(body: JSON) -> list[str]:
    """What in the body only an Anthropic upstream can receive, by path, in the body's order."""
    fields: list[str] = []
    for name, value in body.items():
        if name in ("mcp_servers", "orchestration_mode"):
            continue
        if name in NATIVE_ONLY:
            if value not in (None, {"type": "disabled"}):
                fields.append(name)
        elif name == "output_config":
            fields.extend(f"output_config.{key}" for key, v in (value or {}).items() if key not in CARRIED_OUTPUT_CONFIG and v is not None)
        elif name == "tools":
            # Server tools (web search, code execution, ...) run at Anthropic.
            fields.extend(f"tools[{i}]" for i, tool in enumerate(value or ()) if isinstance(tool, dict) and tool.get("type") not in (None, "custom"))
        elif name not in KNOWN:
            fields.append(name)
    return fields


def has_server_blocks(messages: Any) -> bool:
    """Whether an assistant turn carries plugway's server-side executions (MCP connector or code-mode blocks)."""
    for message in messages or ():
        if not isinstance(message, dict) or message.get("role") != "assistant" or not isinstance(message.get("content"), list):
            continue
        for block in message["content"]:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in _SERVER_BLOCKS or (kind == "server_tool_use" and block.get("name") == "code_execution"):
                return True
    return False


def carries_foreign_reasoning(messages: Any) -> bool:
    """Whether an assistant turn holds another protocol's reasoning, carried in thinking blocks."""
    return any(
        isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), list) and carries_foreign_parts(message["content"])
        for message in messages or ()
    )


def thinking_requested(body: JSON) -> bool:
    """Whether the client asked to see thinking (``thinking`` enabled or adaptive)."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


# output_config.effort as OpenAI's reasoning.effort ("max" is OpenAI's highest, xhigh).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


def reasoning_effort(body: JSON) -> tuple[str | None, set[str]]:
    """The reasoning effort an Anthropic request asks for, for a model that takes OpenAI's
    ``reasoning.effort``, and the fields that say it (no longer ignored).

    ``output_config.effort`` maps by name; without it an enabled ``thinking`` maps by its
    budget (under 4,096 tokens low, under 16,384 medium, else high), and adaptive thinking
    leaves the model's own default. Either way the model reasons: ``thinking`` is honoured.
    """
    mapped: set[str] = set()
    effort = _EFFORTS.get(str((body.get("output_config") or {}).get("effort")))
    if effort is not None:
        mapped.add("output_config.effort")
    if thinking_requested(body):
        mapped.add("thinking")
        budget = body["thinking"].get("budget_tokens")
        if effort is None and body["thinking"].get("type") == "enabled" and isinstance(budget, int):
            effort = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return effort, mapped


def translated_ignored(request: MessagesRequest, *, keep_top_k: bool) -> list[str]:
    """The fields a translated request drops: the native-only ones, and top_k where the upstream has none."""
    ignored = list(request.native_only)
    if not keep_top_k and request.body.get("top_k") is not None:
        ignored.append("top_k")
    return ignored


def _mcp_servers(servers: Any) -> list[PluginRequest] | None:
    if servers is None:
        return None
    if not isinstance(servers, list):
        raise invalid_request("mcp_servers: must be an array", param="mcp_servers")
    plugins: list[PluginRequest] = []
    for i, server in enumerate(servers):
        param = f"mcp_servers[{i}]"
        if not isinstance(server, dict) or server.get("type") != "url":
            raise invalid_request("Each MCP server needs type 'url', a 'name' (the plugin id) and a 'url'.", param=param)
        name = server.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request("An MCP server needs a 'name': the plugin id.", param=f"{param}.name")
        configuration = server.get("tool_configuration") or {}
        if not isinstance(configuration, dict):
            raise invalid_request("tool_configuration: must be an object", param=f"{param}.tool_configuration")
        if configuration.get("enabled") is False:
            continue
        allowed = configuration.get("allowed_tools")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(t, str) for t in allowed)):
            raise invalid_request("allowed_tools: must be an array of tool names", param=f"{param}.tool_configuration.allowed_tools")
        plugins.append(PluginRequest(name, param=f"{param}.name", allowed_tools=frozenset(allowed) if allowed is not None else None))
    return plugins


def check_server_urls(servers: Any, organisation: OrganisationConfig) -> None:
    """Anthropic's type requires ``url``: plugway's own address of the plugin, or its configured URL."""
    for i, server in enumerate(servers or []):
        name, url = server.get("name"), server.get("url")
        ref = organisation.plugin(str(name))
        configured = ref.mcp.url if ref is not None and ref.mcp is not None else None
        if ref is not None and url not in (f"{PLUGIN_URL_PREFIX}{name}", configured):
            raise invalid_request(
                f"mcp_servers[{i}].url {url!r} is not plugin '{name}'; use '{PLUGIN_URL_PREFIX}{name}'.",
                param=f"mcp_servers[{i}].url",
            )


def chat_body(request: MessagesRequest, *, keep_top_k: bool) -> JSON:
    """The OpenAI chat body the loop runs for a translated request."""
    body = request.body
    chat: JSON = {
        "model": request.model,
        "messages": openai_messages(body.get("system"), body["messages"], server_tool_name=public_name),
        "max_tokens": body["max_tokens"],
    }
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if keep_top_k and body.get("top_k") is not None:
        chat["top_k"] = body["top_k"]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    client_tools = [t for t in body.get("tools") or () if not isinstance(t, dict) or t.get("type") in (None, "custom")]
    if client_tools:
        chat["tools"] = openai_tools(client_tools)
    output_format = (body.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": output_format.get("schema") or {}, "strict": True}}
    choice, parallel = openai_tool_choice(body.get("tool_choice"))
    if choice is not None and chat.get("tools"):
        chat["tool_choice"] = choice
    if parallel is not None:
        chat["parallel_tool_calls"] = parallel
    if request.mode is not None:
        chat["orchestration_mode"] = request.mode
    return chat

