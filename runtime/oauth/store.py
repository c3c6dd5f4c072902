"""The authorization server's records: clients, authorization requests, grants and tokens.

Plain synchronous functions over the engine (callers run them in a thread). Every secret
is looked up by its SHA-256 hash; single-use steps (an authorization code, a refresh
token) are claimed with one conditional UPDATE, so two concurrent exchanges cannot
both succeed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from runtime.oauth.models import OAuthAuthorization, OAuthClient, OAuthGrant, OAuthToken
from runtime.storage.keys import KeyInfo, hash_key, key_info, mint_key
from runtime.storage.models import ApiKey, utcnow

ACCESS_TOKEN_PREFIX = "pwo_"
REFRESH_TOKEN_PREFIX = "pwr_"
# RFC 6749 §10.5: short-lived and single-use.
CODE_TTL_S = 300
UNUSED_CLIENT_TTL_S = 7 * 24 * 3600


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _expired(moment: datetime) -> bool:
    return aware(moment) <= utcnow()


# -- clients (dynamic registration) ---------------------------------------------------------


def save_client(engine: Engine, client_id: str, metadata: dict[str, Any], secret: str | None) -> None:
    row = OAuthClient(
        id=client_id,
        metadata_json=orjson.dumps(metadata).decode(),
        secret_hash=hash_key(secret) if secret else None,
    )
    with Session(engine) as session:
        session.add(row)
        session.commit()


def load_client(engine: Engine, client_id: str) -> tuple[dict[str, Any], str | None] | None:
    """The registration (without its secret) and the secret's hash, or None."""
    with Session(engine) as session:
        row = session.get(OAuthClient, client_id)
    if row is None:
        return None
    return orjson.loads(row.metadata_json), row.secret_hash


# -- authorization requests ---------------------------------------------------------------


def create_authorization(
    engine: Engine, *, client_id: str, client_name: str | None, params: dict[str, Any], ttl_s: int
) -> str:
    authorization_id = secrets.token_urlsafe(24)
    row = OAuthAuthorization(
        id=authorization_id,
        client_id=client_id,
        client_name=(client_name or "")[:200] or None,
        params_json=orjson.dumps(params).decode(),
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    with Session(engine) as session:
        session.add(row)
        session.commit()
    return authorization_id


def pending_authorization(engine: Engine, authorization_id: str) -> OAuthAuthorization | None:
    """An authorization request still waiting for consent, or None."""
    with Session(engine) as session:
        row = session.get(OAuthAuthorization, authorization_id)
    if row is None or row.status != "pending" or _expired(row.expires_at):
        return None
    return row


def params_of(row: OAuthAuthorization) -> dict[str, Any]:
    params: dict[str, Any] = orjson.loads(row.params_json)
    return params


@dataclass(frozen=True)
class Approved:
    code: str
    grant_id: str
    key_id: str


def approve(
    engine: Engine,
    authorization_id: str,
    *,
    organisation_id: str,
    scopes: list[str],
    key_scopes: list[str],
    approved_by: str,
    rpm: int | None = None,
    daily_tokens: int | None = None,
) -> Approved | None:
    """Consent given: mint the grant's gateway key, the grant, and a code. None if no longer pending."""
    row = pending_authorization(engine, authorization_id)
    if row is None:
        return None
    params = params_of(row)
    code = secrets.token_urlsafe(32)
    grant_id = "oag_" + secrets.token_hex(8)
    with Session(engine) as session:
        # Claim the request first: approving twice (two tabs) mints one key.
        claimed = session.exec(  # type: ignore[call-overload]
            update(OAuthAuthorization)
            .where(col(OAuthAuthorization.id) == authorization_id, col(OAuthAuthorization.status) == "pending")
            .values(
                status="approved",
                code_hash=hash_key(code),
                grant_id=grant_id,
                expires_at=utcnow() + timedelta(seconds=CODE_TTL_S),
            )
        )
        if claimed.rowcount != 1:
            return None
        session.commit()
    name = f"OAuth: {row.client_name or row.client_id}"[:200]
    _secret, key = mint_key(
        engine,
        organisation_id=organisation_id,
        name=name,
        rpm=rpm,
        daily_tokens=daily_tokens,
        scopes=key_scopes,
    )
    grant = OAuthGrant(
        id=grant_id,
        client_id=row.client_id,
        client_name=row.client_name,
        organisation_id=organisation_id,
        key_id=key.id,
        scopes=" ".join(scopes),
        resource=str(params.get("resource") or ""),
        approved_by=approved_by[:300],
    )
    with Session(engine) as session:
        session.add(grant)
        session.commit()
    return Approved(code=code, grant_id=grant_id, key_id=key.id)


def deny(engine: Engine, authorization_id: str) -> OAuthAuthorization | None:
    row = pending_authorization(engine, authorization_id)
    if row is None:
        return None
    with Session(engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(OAuthAuthorization)
            .where(col(OAuthAuthorization.id) == authorization_id, col(OAuthAuthorization.status) == "pending")
            .values(status="denied")
        )
        session.commit()
    return row


def load_code(engine: Engine, code: str) -> tuple[OAuthAuthorization, OAuthGrant] | None:
    """An approved, unused, unexpired code and its grant."""
    with Session(engine) as session:
        row = session.exec(select(OAuthAuthorization).where(OAuthAuthorization.code_hash == hash_key(code))).first()
        if row is None or row.status != "approved" or _expired(row.expires_at) or row.grant_id is None:
            return None
        grant = session.get(OAuthGrant, row.grant_id)
    if grant is None or grant.revoked_at is not None:
        return None
    return row, grant


# -- tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str


def _issue(session: Session, grant: OAuthGrant, *, access_ttl_s: int, refresh_ttl_s: int) -> IssuedTokens:
    access = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    session.add(OAuthToken(token_hash=hash_key(access), kind="access", grant_id=grant.id, expires_at=now + timedelta(seconds=access_ttl_s)))
    session.add(OAuthToken(token_hash=hash_key(refresh), kind="refresh", grant_id=grant.id, expires_at=now + timedelta(seconds=refresh_ttl_s)))
    return IssuedTokens(access, refresh, access_ttl_s, grant.scopes)


def exchange_code(engine: Engine, code: str, *, access_ttl_s: int, refresh_ttl_s: int) -> IssuedTokens | None:
    """Use the code (once) and issue the grant's first tokens."""
    with Session(engine) as session:
        claimed = session.exec(  # type: ignore[call-overload]
            update(OAuthAuthorization)
            .where(col(OAuthAuthorization.code_hash) == hash_key(code), col(OAuthAuthorization.status) == "approved")
            .values(status="used")
        )
        if claimed.rowcount != 1:
            session.rollback()
            return None
        row = session.exec(select(OAuthAuthorization).where(OAuthAuthorization.code_hash == hash_key(code))).one()
        grant = session.get(OAuthGrant, row.grant_id)
        if grant is None or grant.revoked_at is not None:
            session.rollback()
            return None
        issued = _issue(session, grant, access_ttl_s=access_ttl_s, refresh_ttl_s=refresh_ttl_s)
        session.commit()
        return issued


def load_refresh(engine: Engine, token: str) -> OAuthGrant | None:
    """The live grant of an unused, unexpired refresh token.

    A refresh token presented a second time means it leaked (rotation hands out a new one
    each time): the whole grant is revoked (RFC 9700 §4.14.2).
    """
    with Session(engine) as session:
        row = session.get(OAuthToken, hash_key(token))
        if row is None or row.kind != "refresh" or row.revoked_at is not None or _expired(row.expires_at):
            return None
        grant_id = row.grant_id
        reused = row.used_at is not None
        grant = session.get(OAuthGrant, grant_id)
    if reused:
        revoke_grant(engine, grant_id)
        return None
    if grant is None or grant.revoked_at is not None:
        return None
    return grant


def rotate_refresh(engine: Engine, token: str, *, access_ttl_s: int, refresh_ttl_s: int) -> IssuedTokens | None:
    """Use the refresh token (once): new access and refresh tokens; the grant's earlier access tokens end."""
    now = utcnow()
    with Session(engine) as session:
        claimed = session.exec(  # type: ignore[call-overload]
            update(OAuthToken)
            .where(col(OAuthToken.token_hash) == hash_key(token), col(OAuthToken.used_at).is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:
            session.rollback()
            return None
        row = session.get(OAuthToken, hash_key(token))
        assert row is not None
        grant = session.get(OAuthGrant, row.grant_id)
        if grant is None or grant.revoked_at is not None:
            session.rollback()
            return None
        session.exec(  # type: ignore[call-overload]
            update(OAuthToken)
            .where(col(OAuthToken.grant_id) == grant.id, col(OAuthToken.kind) == "access", col(OAuthToken.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        issued = _issue(session, grant, access_ttl_s=access_ttl_s, refresh_ttl_s=refresh_ttl_s)
        session.commit()
        return issued


@dataclass(frozen=True)
class TokenGrant:
    """What a token stands for: its grant, and whether it is an access or a refresh token."""

    kind: str
    grant: OAuthGrant
    expires_at: datetime


def find_token(engine: Engine, token: str) -> TokenGrant | None:
    """A live token (not revoked, not expired, refresh tokens unused) and its live grant."""
    with Session(engine) as session:
        row = session.get(OAuthToken, hash_key(token))
        if row is None or row.revoked_at is not None or row.used_at is not None or _expired(row.expires_at):
            return None
        grant = session.get(OAuthGrant, row.grant_id)
    if grant is None or grant.revoked_at is not None:
        return None
    return TokenGrant(row.kind, grant, aware(row.expires_at))


@dataclass(frozen=True)
class AccessGrant:
    key: KeyInfo
    resource: str
    client_id: str
    grant_id: str
    subject: str  # who consented (the console's admin key, as the audit log names it)


def resolve_access(engine: Engine, token: str) -> AccessGrant | None:
    """The gateway key an access token acts as, if the token, its grant and the key are all live."""
    found = find_token(engine, token)
    if found is None or found.kind != "access":
        return None
    with Session(engine) as session:
        key = session.get(ApiKey, found.grant.key_id)
    if key is None or key.revoked_at is not None:
        return None
    grant = found.grant
    return AccessGrant(key_info(key), grant.resource, grant.client_id, grant.id, grant.approved_by)


def revoke_grant(engine: Engine, grant_id: str) -> OAuthGrant | None:
    """End a grant: its tokens and its gateway key too. Returns the grant (None if unknown)."""
    now = utcnow()
    with Session(engine) as session:
        grant = session.get(OAuthGrant, grant_id)
        if grant is None:
            return None
        if grant.revoked_at is None:
            grant.revoked_at = now
            session.add(grant)
        session.exec(  # type: ignore[call-overload]
            update(OAuthToken).where(col(OAuthToken.grant_id) == grant_id, col(OAuthToken.revoked_at).is_(None)).values(revoked_at=now)
        )
        session.exec(  # type: ignore[call-overload]
            update(ApiKey).where(col(ApiKey.id) == grant.key_id, col(ApiKey.revoked_at).is_(None)).values(revoked_at=now)
        )
        session.commit()
        session.refresh(grant)
        return grant


def list_grants(engine: Engine, organisation_id: str | None = None, *, include_revoked: bool = False) -> list[OAuthGrant]:
    """Grants, newest first; a grant whose key was revoked on the Keys page has ended too."""
    with Session(engine) as session:
        query = select(OAuthGrant, ApiKey.revoked_at).join(ApiKey, col(ApiKey.id) == col(OAuthGrant.key_id), isouter=True)
        query = query.order_by(col(OAuthGrant.created_at).desc())
        if organisation_id:
            query = query.where(OAuthGrant.organisation_id == organisation_id)
        grants: list[OAuthGrant] = []
        for grant, key_revoked_at in session.exec(query):
            ended = grant.revoked_at or key_revoked_at
            if ended is None or include_revoked:
                grant.revoked_at = ended
                grants.append(grant)
        return grants


def purge(engine: Engine) -> int:
    """Forget what can no longer be used: expired authorization requests and codes, expired or spent tokens."""
    now = utcnow()
    with Session(engine) as session:
        requests = session.exec(delete(OAuthAuthorization).where(col(OAuthAuthorization.expires_at) < now))  # type: ignore[call-overload]
        tokens = session.exec(delete(OAuthToken).where(col(OAuthToken.expires_at) < now))  # type: ignore[call-overload]
        # Registration is open to anyone: a registration that never led to a consent goes after a week.
        granted = select(OAuthGrant.client_id)
        clients = session.exec(  # type: ignore[call-overload]
            delete(OAuthClient).where(
                col(OAuthClient.created_at) < now - timedelta(seconds=UNUSED_CLIENT_TTL_S),
                col(OAuthClient.id).not_in(granted),
            )
        )
        session.commit()
    return int(requests.rowcount or 0) + int(tokens.rowcount or 0) + int(clients.rowcount or 0)


def grant_for_key(engine: Engine, key_id: str) -> OAuthGrant | None:
    with Session(engine) as session:
        return session.exec(select(OAuthGrant).where(OAuthGrant.key_id == key_id)).first()
