"""Gateway keys: minting, hashing, and a small in-memory cache for the hot path.

Only a SHA-256 hash of a key is stored. Lookups go by hash (an index) and the
stored hash is compared in constant time. Keys found are cached for
``ttl_s`` seconds, so a revoked key stops working within that time everywhere;
a key minted while the server runs works at once because misses always ask
the database.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

import anyio.to_thread
import orjson
from sqlalchemy import Engine
from sqlmodel import Session, select

from runtime.errors import database_unavailable
from runtime.storage.engine import OUTAGE_ERRORS
from runtime.storage.models import (
    INT64_MAX,
    KEY_NAME_MAX_CHARS,
    AdminKey,
    ApiKey,
    Organisation,
    utcnow,
)

log = logging.getLogger("plugway.keys")
KEY_PREFIX = "pw_"
ADMIN_KEY_PREFIX = "pwa_"
# What a gateway key may be used for: chat covers chat completions, responses, messages and
# endpoints; embeddings covers /v1/embeddings; mcp covers the /mcp server. No scopes given: all.
SCOPES = ("chat", "embeddings", "mcp")


class KeyRefused(ValueError):
    """A key operation refused, phrased for the operator."""


class InvalidKeyValue(KeyRefused):
    """A name or limit the key cannot have."""


class KeyNotFound(KeyRefused):
    pass


class KeyRevoked(KeyRefused):
    pass


class Keep(enum.Enum):
    """Leave a field as it is, in :func:`update_key` (None already means "no limit")."""

    KEEP = "keep"


KEEP = Keep.KEEP


def check_limit(field: str, value: int | None) -> int | None:
    """A limit as stored: None (no limit), 0 (refuse everything) or a positive count that fits 64 bits."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidKeyValue(f"{field} must be a whole number, not {value!r}")
    if value < 0:
        raise InvalidKeyValue(f"{field} {value} is negative; use 0 to refuse every request, or no limit")
    if value > INT64_MAX:
        raise InvalidKeyValue(f"{field} {value} is too large: at most {INT64_MAX}")
    return value


def check_name(name: str | None) -> str | None:
    if name is not None and len(name) > KEY_NAME_MAX_CHARS:
        raise InvalidKeyValue(f"name is {len(name)} characters long; at most {KEY_NAME_MAX_CHARS}")
    return name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    organisation_id: str
    name: str | None
    rpm: int | None
    daily_tokens: int | None
    scopes: frozenset[str] | None = None  # None: every scope
    models: frozenset[str] | None = None  # None: every model the organisation may use

    def allows_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


def check_scopes(scopes: list[str] | None) -> list[str] | None:
    if scopes is None:
        return None
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidKeyValue(f"unknown scope '{unknown[0]}'; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidKeyValue("a key needs at least one scope (leave scopes out for all of them)")
    return sorted(set(scopes))


def check_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    if not models or not all(isinstance(m, str) and m for m in models):
        raise InvalidKeyValue("models must list model ids (leave it out for every model)")
    return sorted(set(models))


def _json_list(value: list[str] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def stored_list(value: str | None) -> list[str] | None:
    return None if value is None else [str(v) for v in orjson.loads(value)]


def key_info(row: ApiKey) -> KeyInfo:
    scopes, models = stored_list(row.scopes), stored_list(row.models)
    return KeyInfo(
        row.id,
        row.organisation_id,
        row.name,
        row.rpm,
        row.daily_tokens,
        frozenset(scopes) if scopes is not None else None,
        frozenset(models) if models is not None else None,
    )


def mint_key(
    engine: Engine,
    *,
    organisation_id: str,
    name: str | None = None,
    rpm: int | None = None,
    daily_tokens: int | None = None,
    scopes: list[str] | None = None,
    models: list[str] | None = None,
) -> tuple[str, ApiKey]:
    """Create a key; returns the secret (shown once) and the stored row.

    Raises :class:`InvalidKeyValue` for a limit, name, scope or model list the key cannot have.
    """
    name = check_name(name)
    rpm = check_limit("rpm", rpm)
    daily_tokens = check_limit("daily_tokens", daily_tokens)
    scopes = check_scopes(scopes)
    models = check_models(models)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id="key_" + secrets.token_hex(8),
        organisation_id=organisation_id,
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:10],
        rpm=rpm,
        daily_tokens=daily_tokens,
        scopes=_json_list(scopes),
        models=_json_list(models),
    )
    with Session(engine) as session:
        if session.get(Organisation, organisation_id) is None:
            session.add(Organisation(id=organisation_id))
        session.add(row)
        session.commit()
        session.refresh(row)
    return secret, row


def list_keys(engine: Engine, organisation_id: str | None = None) -> list[ApiKey]:
    with Session(engine) as session:
        query = select(ApiKey).order_by(ApiKey.created_at)  # type: ignore[arg-type]
        if organisation_id:
            query = query.where(ApiKey.organisation_id == organisation_id)
        return list(session.exec(query))


def find_key(engine: Engine, key_id: str) -> ApiKey | None:
    with Session(engine) as session:
        return session.get(ApiKey, key_id)


def revoke_key(engine: Engine, key_id: str) -> bool:
    with Session(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        return True


def update_key(
    engine: Engine,
    key_id: str,
    *,
    rpm: int | None | Keep = KEEP,
    daily_tokens: int | None | Keep = KEEP,
    name: str | None | Keep = KEEP,
    scopes: list[str] | None | Keep = KEEP,
    models: list[str] | None | Keep = KEEP,
) -> ApiKey:
    """Change only the fields given (None clears a limit); returns the updated row.

    Raises :class:`KeyNotFound`, :class:`KeyRevoked` (a revoked key stays
    revoked: mint a new one) or :class:`InvalidKeyValue`.
    """
    changes: dict[str, int | str | None] = {}
    if rpm is not KEEP:
        changes["rpm"] = check_limit("rpm", rpm)
    if daily_tokens is not KEEP:
        changes["daily_tokens"] = check_limit("daily_tokens", daily_tokens)
    if name is not KEEP:
        changes["name"] = check_name(name)
    if scopes is not KEEP:
        changes["scopes"] = _json_list(check_scopes(scopes))
    if models is not KEEP:
        changes["models"] = _json_list(check_models(models))
    with Session(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise KeyNotFound(f"no key '{key_id}'")
        if row.revoked_at is not None:
            raise KeyRevoked(f"key '{key_id}' is revoked; mint a new one with `plugway keys create`")
        for field, value in changes.items():
            setattr(row, field, value)
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def sync_organisations(engine: Engine, organisation_ids: list[str]) -> None:
    with Session(engine) as session:
        existing = set(session.exec(select(Organisation.id)))
        for org_id in organisation_ids:
            if org_id not in existing:
                session.add(Organisation(id=org_id))
        session.commit()


class KeyCache:
    def __init__(self, engine: Engine, *, ttl_s: float = 5.0, max_entries: int = 100_000) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, KeyInfo | None]] = {}

    async def lookup(self, key: str) -> KeyInfo | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            info = await anyio.to_thread.run_sync(self._load, digest)
        except OUTAGE_ERRORS:
            log.warning("cannot look up a key: the database is unreachable; answering 503", exc_info=True)
            raise database_unavailable() from None
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        # Unknown keys are remembered only briefly: a fresh key must work at once.
        self._entries[digest] = (now + (self.ttl_s if info else min(1.0, self.ttl_s)), info)
        return info

    def _load(self, digest: str) -> KeyInfo | None:
        with Session(self.engine) as session:
            row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.key_hash, digest):
            return None
        return key_info(row)

    def forget(self) -> None:
        self._entries.clear()


# -- admin keys: the management API and the console ------------------------------------------


@dataclass(frozen=True)
class AdminInfo:
    id: str
    name: str | None

    @property
    def actor(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


def mint_admin_key(engine: Engine, *, name: str | None = None) -> tuple[str, AdminKey]:
    name = check_name(name)
    secret = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
    row = AdminKey(id="adm_" + secrets.token_hex(8), name=name, key_hash=hash_key(secret), prefix=secret[:11])
    with Session(engine) as session:
        session.add(row)
        session.commit()
        session.refresh(row)
    return secret, row


def list_admin_keys(engine: Engine) -> list[AdminKey]:
    with Session(engine) as session:
        return list(session.exec(select(AdminKey).order_by(AdminKey.created_at)))  # type: ignore[arg-type]


def revoke_admin_key(engine: Engine, key_id: str) -> bool:
    with Session(engine) as session:
        row = session.get(AdminKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        return True


class AdminKeyCache:
    """Admin keys as the management API checks them (same caching and revocation delay as gateway keys)."""

    def __init__(self, engine: Engine, *, ttl_s: float = 5.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, AdminInfo | None]] = {}

    async def lookup(self, key: str) -> AdminInfo | None:
        if not key.startswith(ADMIN_KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        info = await anyio.to_thread.run_sync(self._load, digest)
        if len(self._entries) >= 10_000:
            self._entries.clear()
        self._entries[digest] = (now + (self.ttl_s if info else min(1.0, self.ttl_s)), info)
        return info

    def _load(self, digest: str) -> AdminInfo | None:
        with Session(self.engine) as session:
            row = session.exec(select(AdminKey).where(AdminKey.key_hash == digest)).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return AdminInfo(row.id, row.name)
