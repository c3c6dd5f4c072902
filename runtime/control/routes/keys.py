"""Gateway keys: mint (the key is shown once), list, read, update limits/scopes/models, revoke."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from sqlalchemy import Engine, tuple_
from sqlmodel import Session, col, select

from runtime.api.deps import GatewayDep
from runtime.control import pagination
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.control.schemas import KeyCreate, KeyCreated, KeyOut, KeyUpdate
from runtime.errors import GatewayError, invalid_request
from runtime.storage.keys import (
    KEEP,
    InvalidKeyValue,
    KeyNotFound,
    KeyRevoked,
    find_key,
    mint_key,
    revoke_key,
    stored_list,
    update_key,
)
from runtime.storage.models import ApiKey

router = APIRouter(tags=["admin: keys"])


def key_out(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "organisation": row.organisation_id,
        "name": row.name,
        "prefix": row.prefix,
        "rpm": row.rpm,
        "daily_tokens": row.daily_tokens,
        "scopes": stored_list(row.scopes),
        "models": stored_list(row.models),
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def not_found(key_id: str) -> GatewayError:
    return GatewayError(404, f"No key '{key_id}'.", code="not_found", type="invalid_request_error")


def _check_models(gateway: Any, organisation_id: str, models: list[str] | None) -> None:
    organisation = gateway.organisation(organisation_id)
    if organisation is None:
        raise invalid_request(f"Organisation '{organisation_id}' is not configured.", param="organisation")
    allowed = {m.id for m in gateway.models_for(organisation)}
    for model in models or ():
        if model not in allowed:
            raise invalid_request(f"Model '{model}' is not available to organisation '{organisation_id}'.", param="models")


@router.post("/admin/v1/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    _check_models(gateway, body.organisation, body.models)
    try:
        secret, row = await anyio.to_thread.run_sync(
            partial(mint_key, gateway.engine, organisation_id=body.organisation, name=body.name, rpm=body.rpm, daily_tokens=body.daily_tokens, scopes=body.scopes, models=body.models)
        )
    except InvalidKeyValue as exc:
        raise invalid_request(str(exc)) from None
    await audit(request, admin, "key.create", row.id, {"organisation": body.organisation, "name": body.name})
    return {**key_out(row), "key": secret}


def _page(engine: Engine, organisation: str | None, include_revoked: bool, after: Any, limit: int) -> list[ApiKey]:
    query = select(ApiKey).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc()).limit(limit + 1)
    if organisation:
        query = query.where(col(ApiKey.organisation_id) == organisation)
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    if after is not None:
        query = query.where(tuple_(col(ApiKey.created_at), col(ApiKey.id)) < (datetime.fromisoformat(after[0]), after[1]))
    with Session(engine) as session:
        return list(session.exec(query))


@router.get("/admin/v1/keys")
async def list_keys(
    gateway: GatewayDep,
    admin: AdminDep,
    organisation: str | None = None,
    include_revoked: bool = False,
    limit: int = Query(default=pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    after = pagination.decode(cursor)
    rows = await anyio.to_thread.run_sync(partial(_page, gateway.engine, organisation, include_revoked, after, limit))
    result = pagination.page(rows, limit, lambda row: [row.created_at.isoformat(), row.id])
    result["data"] = [key_out(row) for row in result["data"]]
    return result


@router.get("/admin/v1/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    row = await anyio.to_thread.run_sync(find_key, gateway.engine, key_id)
    if row is None:
        raise not_found(key_id)
    return key_out(row)


@router.patch("/admin/v1/keys/{key_id}", response_model=KeyOut)
async def update(key_id: str, body: KeyUpdate, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    given = body.model_fields_set
    existing = await anyio.to_thread.run_sync(find_key, gateway.engine, key_id)
    if existing is None:
        raise not_found(key_id)
    if "models" in given:
        _check_models(gateway, existing.organisation_id, body.models)
    changes = {field: getattr(body, field) if field in given else KEEP for field in ("name", "rpm", "daily_tokens", "scopes", "models")}
    try:
        row = await anyio.to_thread.run_sync(partial(update_key, gateway.engine, key_id, **changes))
    except KeyNotFound:
        raise not_found(key_id) from None
    except KeyRevoked as exc:
        raise GatewayError(409, str(exc), code="key_revoked", type="invalid_request_error") from None
    except InvalidKeyValue as exc:
        raise invalid_request(str(exc)) from None
    await audit(request, admin, "key.update", key_id, {field: getattr(body, field) for field in sorted(given)})
    return key_out(row)


@router.delete("/admin/v1/keys/{key_id}")
async def revoke(key_id: str, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    row = await anyio.to_thread.run_sync(find_key, gateway.engine, key_id)
    if row is None:
        raise not_found(key_id)
    revoked = await anyio.to_thread.run_sync(revoke_key, gateway.engine, key_id)
    if revoked:
        await audit(request, admin, "key.revoke", key_id)
    row = await anyio.to_thread.run_sync(find_key, gateway.engine, key_id)
    assert row is not None
    return {**key_out(row), "revoked": True, "takes_effect_within_s": gateway.settings.key_cache_ttl_s}
