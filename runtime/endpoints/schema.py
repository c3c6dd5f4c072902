"""Endpoint request bodies, as pydantic models, for the OpenAPI schema only (see ``pipeline``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class EndpointRequest(BaseModel):
    """What a frontend sends an endpoint: the user's words, and what the endpoint's template and schema ask for."""

    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(default=None, description="One user message.")
    messages: list[Turn] | None = Field(default=None, description="Or several turns.")
    session_id: str | None = Field(default=None, description="Resume a session; omit to start one (sessions enabled).")
    variables: dict[str, Any] | None = Field(default=None, description="Values for the system prompt's {{slots}}.")
    input: Any = Field(default=None, description="Structured input, checked against the endpoint's input_schema.")
    stream: bool | None = None
    request_id: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, description="The end user this call is for: MCP servers authorized per end user run as them.")


class DispatchRequest(EndpointRequest):
    endpoint: str = Field(description="The endpoint's slug.")
