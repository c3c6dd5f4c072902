"""Tables of upstream OAuth: tokens (encrypted), registered clients, authorizations in progress.

Every secret column holds Fernet ciphertext (:mod:`runtime.mcp.oauth.secrets`), never the secret.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class McpOAuthToken(SQLModel, table=True):
    """The token of one organisation's MCP plugin, for the organisation (subject '') or one end user."""

    __tablename__ = "mcp_oauth_tokens"
    __table_args__ = (UniqueConstraint("organisation_id", "plugin_id", "subject", name="uq_mcp_oauth_token_owner"),)

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: str = Field(max_length=128)
    plugin_id: str = Field(max_length=128)
    subject: str = Field(default="", max_length=256)
    # The server the token was granted for: a token is never sent to another URL.
    server_url: str = Field(sa_column=Column(Text, nullable=False))
    access_token: str = Field(sa_column=Column(Text, nullable=False))  # sealed
    refresh_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # sealed
    token_url: str = Field(sa_column=Column(Text, nullable=False))
    client_id: str = Field(sa_column=Column(Text, nullable=False))
    client_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # sealed
    auth_method: str | None = Field(default=None, max_length=64)
    resource: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    scope: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_by: str | None = Field(default=None, max_length=128)


class McpOAuthClient(SQLModel, table=True):
    """A client plugway registered with an authorization server (RFC 7591), reused for every authorization there."""

    __tablename__ = "mcp_oauth_clients"
    __table_args__ = (UniqueConstraint("issuer", "redirect_uri", name="uq_mcp_oauth_client"),)

    id: int | None = Field(default=None, primary_key=True)
    issuer: str = Field(max_length=1000)
    redirect_uri: str = Field(max_length=1000)
    client_id: str = Field(sa_column=Column(Text, nullable=False))
    client_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # sealed
    token_endpoint_auth_method: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class McpOAuthPending(SQLModel, table=True):
    """An authorization sent to the authorization server, waiting for its callback (one use, minutes)."""

    __tablename__ = "mcp_oauth_pending"

    state_hash: str = Field(primary_key=True, max_length=64)  # sha256 of the state sent out
    organisation_id: str = Field(max_length=128)
    plugin_id: str = Field(max_length=128)
    subject: str = Field(default="", max_length=256)
    server_url: str = Field(sa_column=Column(Text, nullable=False))
    code_verifier: str = Field(sa_column=Column(Text, nullable=False))  # sealed
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    token_url: str = Field(sa_column=Column(Text, nullable=False))
    client_id: str = Field(sa_column=Column(Text, nullable=False))
    client_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # sealed
    auth_method: str | None = Field(default=None, max_length=64)
    issuer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    resource: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    return_to: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: str | None = Field(default=None, max_length=128)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
