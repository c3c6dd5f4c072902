"""Reading and writing the upstream OAuth tables; secrets sealed on the way in, opened on the way out.

Functions here are synchronous: run them in a worker thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from runtime.mcp.oauth.client import Client, TokenSet
from runtime.mcp.oauth.secrets import SecretBox
from runtime.mcp.oauth.tables import McpOAuthClient, McpOAuthPending, McpOAuthToken


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for what was written in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True)
class StoredToken:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    token_url: str
    client: Client
    resource: str | None
    scope: str | None


@dataclass(frozen=True)
class Pending:
    organisation_id: str
    plugin_id: str
    subject: str
    server_url: str
    code_verifier: str
    redirect_uri: str
    token_url: str
    client: Client
    issuer: str | None
    resource: str | None
    return_to: str | None
    created_by: str | None


def _owner(organisation_id: str, plugin_id: str, subject: str | None) -> ColumnElement[bool]:
    condition = and_(col(McpOAuthToken.organisation_id) == organisation_id, col(McpOAuthToken.plugin_id) == plugin_id)
    return condition if subject is None else and_(condition, col(McpOAuthToken.subject) == subject)


def save_token(
    engine: Engine,
    box: SecretBox,
    *,
    organisation_id: str,
    plugin_id: str,
    subject: str,
    server_url: str,
    tokens: TokenSet,
    token_url: str,
    client: Client,
    resource: str | None,
    created_by: str | None,
) -> None:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "server_url": server_url,
        "access_token": box.seal(tokens.access_token),
        "refresh_token": box.seal(tokens.refresh_token) if tokens.refresh_token else None,
        "token_url": token_url,
        "client_id": client.client_id,
        "client_secret": box.seal(client.client_secret) if client.client_secret else None,
        "auth_method": client.auth_method,
        "resource": resource,
        "scope": tokens.scope,
        "expires_at": tokens.expires_at,
        "updated_at": now,
    }
    owner = _owner(organisation_id, plugin_id, subject)
    with engine.begin() as connection:
        if connection.execute(update(McpOAuthToken).where(owner).values(**values)).rowcount:
            return
        try:
            connection.execute(
                McpOAuthToken.__table__.insert().values(  # type: ignore[attr-defined]
                    organisation_id=organisation_id,
                    plugin_id=plugin_id,
                    subject=subject,
                    created_at=now,
                    created_by=created_by,
                    **values,
                )
            )
        except IntegrityError:
            # Another process inserted it a moment ago: ours is newer.
            connection.execute(update(McpOAuthToken).where(owner).values(**values))


def load_token(
    engine: Engine, box: SecretBox, *, organisation_id: str, plugin_id: str, subject: str, server_url: str
) -> StoredToken | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(McpOAuthToken).where(
                McpOAuthToken.organisation_id == organisation_id,  # type: ignore[arg-type]
                McpOAuthToken.plugin_id == plugin_id,  # type: ignore[arg-type]
                McpOAuthToken.subject == subject,  # type: ignore[arg-type]
            )
        ).first()
    if row is None or row.server_url != server_url:
        return None
    secret = box.open(row.client_secret) if row.client_secret else None
    return StoredToken(
        access_token=box.open(row.access_token),
        refresh_token=box.open(row.refresh_token) if row.refresh_token else None,
        expires_at=_aware(row.expires_at),
        token_url=row.token_url,
        client=Client(row.client_id, secret, row.auth_method),
        resource=row.resource,
        scope=row.scope,
    )


def delete_tokens(engine: Engine, *, organisation_id: str, plugin_id: str, subject: str | None) -> int:
    """Forget the organisation's token (subject ''), one end user's, or every one (subject None)."""
    condition = _owner(organisation_id, plugin_id, subject)
    with engine.begin() as connection:
        return int(connection.execute(delete(McpOAuthToken).where(condition)).rowcount or 0)


def authorizations(engine: Engine, *, organisation_id: str, plugin_id: str) -> list[dict[str, Any]]:
    """Who has authorized the plugin and when: never a token."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(McpOAuthToken)
            .where(McpOAuthToken.organisation_id == organisation_id, McpOAuthToken.plugin_id == plugin_id)  # type: ignore[arg-type]
            .order_by(McpOAuthToken.subject)  # type: ignore[arg-type]
        ).all()
    return [
        {
            "subject": row.subject or None,
            "server_url": row.server_url,
            "scope": row.scope,
            "expires_at": _iso(_aware(row.expires_at)),
            "refreshable": row.refresh_token is not None,
            "created_at": _iso(_aware(row.created_at)),
            "updated_at": _iso(_aware(row.updated_at)),
            "created_by": row.created_by,
        }
        for row in rows
    ]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def load_client(engine: Engine, box: SecretBox, *, issuer: str, redirect_uri: str) -> Client | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(McpOAuthClient).where(McpOAuthClient.issuer == issuer, McpOAuthClient.redirect_uri == redirect_uri)  # type: ignore[arg-type]
        ).first()
    if row is None:
        return None
    return Client(row.client_id, box.open(row.client_secret) if row.client_secret else None, row.token_endpoint_auth_method)


def save_client(engine: Engine, box: SecretBox, *, issuer: str, redirect_uri: str, client: Client) -> None:
    with engine.begin() as connection:
        connection.execute(
            delete(McpOAuthClient).where(McpOAuthClient.issuer == issuer, McpOAuthClient.redirect_uri == redirect_uri)  # type: ignore[arg-type]
        )
        connection.execute(
            McpOAuthClient.__table__.insert().values(  # type: ignore[attr-defined]
                issuer=issuer,
                redirect_uri=redirect_uri,
                client_id=client.client_id,
                client_secret=box.seal(client.client_secret) if client.client_secret else None,
                token_endpoint_auth_method=client.auth_method,
                created_at=datetime.now(UTC),
            )
        )


def save_pending(engine: Engine, box: SecretBox, *, state: str, pending: Pending, expires_at: datetime) -> None:
    with engine.begin() as connection:
        # Expired authorizations nobody finished go as new ones come.
        connection.execute(delete(McpOAuthPending).where(McpOAuthPending.expires_at < datetime.now(UTC)))  # type: ignore[arg-type]
        connection.execute(
            McpOAuthPending.__table__.insert().values(  # type: ignore[attr-defined]
                state_hash=state_hash(state),
                organisation_id=pending.organisation_id,
                plugin_id=pending.plugin_id,
                subject=pending.subject,
                server_url=pending.server_url,
                code_verifier=box.seal(pending.code_verifier),
                redirect_uri=pending.redirect_uri,
                token_url=pending.token_url,
                client_id=pending.client.client_id,
                client_secret=box.seal(pending.client.client_secret) if pending.client.client_secret else None,
                auth_method=pending.client.auth_method,
                issuer=pending.issuer,
                resource=pending.resource,
                return_to=pending.return_to,
                created_by=pending.created_by,
                expires_at=expires_at,
            )
        )


def take_pending(engine: Engine, box: SecretBox, *, state: str) -> Pending | None:
    """The authorization ``state`` names, removed (a state is good once), or None if unknown or expired."""
    key = state_hash(state)
    with engine.begin() as connection:
        row = connection.execute(select(McpOAuthPending).where(McpOAuthPending.state_hash == key)).first()  # type: ignore[arg-type]
        if row is None:
            return None
        taken = connection.execute(delete(McpOAuthPending).where(McpOAuthPending.state_hash == key)).rowcount  # type: ignore[arg-type]
    expires_at = _aware(row.expires_at)
    if not taken or expires_at is None or expires_at < datetime.now(UTC):
        return None
    return Pending(
        organisation_id=row.organisation_id,
        plugin_id=row.plugin_id,
        subject=row.subject,
        server_url=row.server_url,
        code_verifier=box.open(row.code_verifier),
        redirect_uri=row.redirect_uri,
        token_url=row.token_url,
        client=Client(row.client_id, box.open(row.client_secret) if row.client_secret else None, row.auth_method),
        issuer=row.issuer,
        resource=row.resource,
        return_to=row.return_to,
        created_by=row.created_by,
    )
