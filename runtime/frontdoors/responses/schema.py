"""The Responses API request body, as pydantic models, for the OpenAPI schema only (see ``translate``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputText(_Open):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(_Open):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["low", "high", "auto"] | None = None


class InputMessage(_Open):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]


class FunctionCallItem(_Open):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(_Open):
    type: Literal["function_call_output"]
    call_id: str
    output: str


class McpApprovalResponseItem(_Open):
    type: Literal["mcp_approval_response"]
    approval_request_id: str
    approve: bool
    reason: str | None = None


class FunctionTool(_Open):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolNames(_Open):
    tool_names: list[str]


class ApprovalFilter(_Open):
    always: ToolNames | None = None
    never: ToolNames | None = None


class McpTool(_Open):
    """A plugin of the organisation, in OpenAI's hosted-MCP shape (``server_label`` = plugin id)."""

    type: Literal["mcp"]
    server_label: str
    server_url: str | None = Field(default=None, description="plugway://plugins/<plugin-id>, or the plugin's configured URL")
    allowed_tools: list[str] | ToolNames | None = None
    require_approval: Literal["always", "never"] | ApprovalFilter | None = None


class TextFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Open):
    format: TextFormat | None = None


class NamespaceTool(_Open):
    """A group of function tools; offered to the model as ``<namespace>__<name>``, its calls answered with ``namespace``."""

    type: Literal["namespace"]
    name: str
    description: str | None = None
    tools: list[FunctionTool]


class HostedTool(_Open):
    """OpenAI's hosted tools (web_search, file_search, ...): passed to a Responses-native upstream; otherwise ignored and named in x-plugway-ignored-params."""

    type: str


class Reasoning(_Open):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(default=None, description="Passed on as reasoning_effort.")
    summary: str | None = Field(default=None, description="Passed to a Responses-native upstream; ignored for a chat upstream, which returns no summary.")


class ReasoningItem(_Open):
    """A reasoning item the model returned, sent back (with ``encrypted_content`` by a ``store: false`` client)."""

    type: Literal["reasoning"]
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    encrypted_content: str | None = None


class CreateResponseRequest(_Open):
    """OpenAI's Responses API request, as plugway serves it.

    For a Responses-native model (``api: responses``) the request goes on as it is,
    unknown fields included. For any other, fields a chat upstream cannot receive
    (``reasoning.summary``, ``include``, ``client_metadata``, hosted tools, reasoning
    items, unknown fields) are ignored and named in the ``x-plugway-ignored-params``
    header, or refused under ``unsupported_params: refuse``.
    """

    model: str = Field(min_length=1)
    input: str | list[Annotated[InputMessage | FunctionCallItem | FunctionCallOutputItem | McpApprovalResponseItem | ReasoningItem, Field(discriminator="type")]] | None = None
    instructions: str | None = None
    tools: list[FunctionTool | McpTool | NamespaceTool | HostedTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = True
    previous_response_id: str | None = None
    stream: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    reasoning: Reasoning | None = None
    include: list[str] | None = Field(default=None, description="'reasoning.encrypted_content' returns reasoning items whole; the rest reaches a Responses-native upstream only.")
    prompt_cache_key: str | None = None
