"""The Messages API request body, as pydantic models, for the OpenAPI schema only (see ``translate``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentBlock(_Open):
    type: Literal["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "mcp_tool_use", "mcp_tool_result", "server_tool_use", "code_execution_tool_result"]


class Message(_Closed):
    role: Literal["user", "assistant", "system"] = Field(description="system: a mid-conversation system message, kept in place.")
    content: str | list[ContentBlock]


class Tool(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ToolConfiguration(_Closed):
    enabled: bool | None = None
    allowed_tools: list[str] | None = None


class McpServer(_Closed):
    """A plugin of the organisation, in Anthropic's MCP connector shape (``name`` = plugin id)."""

    type: Literal["url"]
    name: str
    url: str = Field(description="plugway://plugins/<plugin-id>, or the plugin's configured URL")
    authorization_token: str | None = None
    tool_configuration: ToolConfiguration | None = None


class Metadata(_Closed):
    user_id: str | None = None


class MessagesRequestBody(_Open):
    """Anthropic's Messages request, as plugway serves it for any configured model.

    Fields a model's upstream cannot receive (``thinking``, ``context_management``,
    ``output_config.effort``, server tools, unknown fields, for a model that is not
    Anthropic's) are ignored and named in the ``x-plugway-ignored-params`` header,
    or refused under ``unsupported_params: refuse``.
    """

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1, le=2**31 - 1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    mcp_servers: list[McpServer] | None = None
    thinking: dict[str, Any] | None = Field(default=None, description="Anthropic models without server-side tools only; ignored elsewhere.")
    context_management: dict[str, Any] | None = Field(default=None, description="Anthropic models without server-side tools only; ignored elsewhere.")
    output_config: dict[str, Any] | None = Field(default=None, description="format is carried everywhere; effort reaches Anthropic models only.")


class CountTokensRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[Tool] | None = None
