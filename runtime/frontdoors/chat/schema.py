"""The chat-completions request body, as pydantic models, for the OpenAPI schema only.

The route validates with :mod:`runtime.frontdoors.chat.validation` (unknown
OpenAI fields must pass through untouched, and that is on the hot path); these
models describe the same body so that clients, generated SDKs and
schema-driven fuzzers (schemathesis, in the test suite) know its shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Open):
    name: str
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Open):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_Open):
    role: Literal["tool"]
    tool_call_id: str
    content: str | list[TextPart]


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(_Open):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: dict[str, str]


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Open):
    """OpenAI's chat-completions request. Unknown fields are forwarded to the provider unchanged."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = Field(default=None, description="Only with stream: true.")
    tools: list[FunctionTool] | None = Field(
        default=None, description="Your own tools: the request is passed through and their calls come back to you."
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    enabled_plugin_ids: list[str] | None = Field(
        default=None, description="plugway: run only these of the organisation's plugins' tools."
    )
    request_id: str | None = Field(default=None, description="plugway: the correlation id, like X-Request-Id.")
    orchestration_mode: Literal["classic", "code", "auto"] | None = Field(
        default=None, description="plugway: classic (a model round per tool step), code (one script over the tools) or auto."
    )
