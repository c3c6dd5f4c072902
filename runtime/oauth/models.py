"""Tables of plugway's own authorization server (the OAuth side of ``/mcp``).

Secrets (authorization codes, access and refresh tokens, dynamically registered
clients' secrets) are stored as SHA-256 hashes only: each is 256 bits of randomness,
so a fast hash is safe, as for gateway keys.

A *grant* is one consent: a person signed in to the console approved a client for an
organisation and scopes. Each grant owns a gateway key (``api_keys``) minted at consent:
its tokens act as that key (scopes, limits, usage, audit); revoking the grant revokes
the key and every token.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from runtime.storage.models import utcnow

URL_MAX_CHARS = 2000


class OAuthClient(SQLModel, table=True):
    """A client registered through dynamic client registration (RFC 7591)."""

    __tablename__ = "oauth_clients"

    id: str = Field(primary_key=True, max_length=64)
    # The registration as the client sent it, with what the server assigned (JSON), secret removed.
    metadata_json: str = Field(sa_column=Column(Text, nullable=False))
    secret_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class OAuthAuthorization(SQLModel, table=True):
    """One authorization request: awaiting consent, then an unused code, then used (or denied)."""

    __tablename__ = "oauth_authorizations"

    id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=URL_MAX_CHARS)
    client_name: str | None = Field(default=None, max_length=200)
    # state, scopes, code_challenge, redirect_uri, redirect_uri_provided_explicitly, resource (JSON).
    params_json: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | approved | used | denied
    code_hash: str | None = Field(default=None, unique=True, index=True, max_length=64)
    grant_id: str | None = Field(default=None, max_length=32)
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class OAuthGrant(SQLModel, table=True):
    """A consent: this client may act as this key of this organisation, for this resource."""

    __tablename__ = "oauth_grants"

    id: str = Field(primary_key=True, max_length=32)
    client_id: str = Field(max_length=URL_MAX_CHARS)
    client_name: str | None = Field(default=None, max_length=200)
    organisation_id: str = Field(index=True, max_length=128)
    key_id: str = Field(index=True, max_length=32)
    scopes: str = Field(max_length=200)  # space-separated
    resource: str = Field(max_length=URL_MAX_CHARS)
    approved_by: str = Field(max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class OAuthToken(SQLModel, table=True):
    """An access or refresh token of a grant; a refresh token is used once (rotation)."""

    __tablename__ = "oauth_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=8)  # access | refresh
    grant_id: str = Field(index=True, max_length=32)
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None  # refresh tokens: exchanged once
    revoked_at: datetime | None = None
