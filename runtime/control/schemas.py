"""Request and response bodies of the management API (validated by FastAPI, in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from runtime.config import EndpointConfig, SessionsConfig
from runtime.storage.keys import SCOPES


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Closed):
    organisation: str
    name: str | None = Field(default=None, max_length=200)
    # Strict: true is not 1 and "5" is not 5 (a client bug, not a limit).
    rpm: StrictInt | None = Field(default=None, ge=0, description="Requests per minute; null: no limit, 0: refuse all.")
    daily_tokens: StrictInt | None = Field(default=None, ge=0, description="Tokens per UTC day; null: no limit.")
    scopes: list[str] | None = Field(default=None, description=f"Of {', '.join(SCOPES)}; null: all.")
    models: list[str] | None = Field(default=None, description="Model allow-list; null: every model of the organisation.")


class KeyUpdate(_Closed):
    """Only the fields given change; null clears a limit, scopes or models."""

    name: str | None = Field(default=None, max_length=200)
    rpm: StrictInt | None = Field(default=None, ge=0)
    daily_tokens: StrictInt | None = Field(default=None, ge=0)
    scopes: list[str] | None = None
    models: list[str] | None = None


class KeyOut(BaseModel):
    id: str
    organisation: str
    name: str | None
    prefix: str
    rpm: int | None
    daily_tokens: int | None
    scopes: list[str] | None
    models: list[str] | None
    created_at: str
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown here once, never again.")


class EndpointCreate(EndpointConfig):
    organisation: str


class EndpointUpdate(_Closed):
    """Only the fields given change; ``active: false`` deactivates."""

    model: str | None = None
    description: str | None = None
    system_prompt: str | None = None
    plugins: list[str] | None = None
    stream: bool | None = None
    sessions: SessionsConfig | None = None
    max_tokens_per_request: StrictInt | None = Field(default=None, ge=1)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    guardrails: list[str] | None = None
    active: bool | None = None


class ToolCall(_Closed):
    arguments: dict[str, Any] = Field(default_factory=dict)


class PlaygroundRequest(_Closed):
    organisation: str
    endpoint: str | None = Field(default=None, description="An endpoint's slug; or give model.")
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1, description="OpenAI chat messages (endpoint: user and assistant turns).")
    session_id: str | None = None
    variables: dict[str, Any] | None = None
