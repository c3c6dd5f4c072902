"""Endpoints: the YAML ones (read-only here) and those stored through this API (create, update,
deactivate, delete). A change reaches every gateway process within the registry's refresh time."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from runtime.api.deps import GatewayDep
from runtime.config import EndpointConfig, endpoint_problems
from runtime.control.audit import audit
from runtime.control.auth import AdminDep
from runtime.control.schemas import EndpointCreate, EndpointUpdate
from runtime.endpoints import EndpointService
from runtime.endpoints.store import delete_endpoint, insert_endpoint, replace_endpoint
from runtime.errors import GatewayError, invalid_request
from runtime.gateway import Gateway

router = APIRouter(tags=["admin: endpoints"])


def _service(request: Request) -> EndpointService:
    service: EndpointService = request.app.state.endpoints
    return service


def _out(organisation: str, endpoint: EndpointConfig, source: str) -> dict[str, Any]:
    return {"organisation": organisation, "source": source, "read_only": source == "config", **endpoint.model_dump(mode="json")}


def _organisation(gateway: Gateway, organisation_id: str) -> Any:
    organisation = gateway.organisation(organisation_id)
    if organisation is None:
        raise GatewayError(404, f"Organisation '{organisation_id}' is not configured.", code="not_found", type="invalid_request_error")
    return organisation


def _validate(gateway: Gateway, organisation: Any, endpoint: EndpointConfig) -> None:
    model_ids = {m.id for m in gateway.settings.models}
    for path, message in endpoint_problems(organisation, endpoint, model_ids):
        raise invalid_request(f"{path}: {message}", param=path)


@router.get("/admin/v1/endpoints")
async def list_endpoints(request: Request, admin: AdminDep, organisation: str | None = None) -> dict[str, Any]:
    listed = await _service(request).registry.listing(organisation)
    return {"data": [_out(item.organisation_id, item.endpoint, item.source) for item in listed], "next_cursor": None}


async def _find(request: Request, organisation_id: str, slug: str) -> tuple[EndpointConfig, str]:
    for item in await _service(request).registry.listing(organisation_id):
        if item.endpoint.slug == slug:
            return item.endpoint, item.source
    raise GatewayError(404, f"No endpoint '{slug}' in organisation '{organisation_id}'.", code="not_found", type="invalid_request_error")


@router.get("/admin/v1/endpoints/{organisation}/{slug}")
async def get_endpoint(organisation: str, slug: str, request: Request, admin: AdminDep) -> dict[str, Any]:
    endpoint, source = await _find(request, organisation, slug)
    return _out(organisation, endpoint, source)


@router.post("/admin/v1/endpoints", status_code=201)
async def create_endpoint(body: EndpointCreate, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    organisation = _organisation(gateway, body.organisation)
    endpoint = EndpointConfig.model_validate(body.model_dump(exclude={"organisation"}))
    _validate(gateway, organisation, endpoint)
    registry = _service(request).registry
    if await registry.get(organisation, endpoint.slug) is not None:
        raise GatewayError(409, f"Organisation '{body.organisation}' already has an endpoint '{endpoint.slug}'.", code="conflict", type="invalid_request_error")
    try:
        await anyio.to_thread.run_sync(partial(insert_endpoint, gateway.engine, body.organisation, endpoint))
    except IntegrityError:
        raise GatewayError(409, f"Organisation '{body.organisation}' already has an endpoint '{endpoint.slug}'.", code="conflict", type="invalid_request_error") from None
    await registry.refresh(force=True)
    await audit(request, admin, "endpoint.create", f"{body.organisation}/{endpoint.slug}")
    return _out(body.organisation, endpoint, "api")


@router.patch("/admin/v1/endpoints/{organisation}/{slug}")
async def update_endpoint(organisation: str, slug: str, body: EndpointUpdate, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    org = _organisation(gateway, organisation)
    current, source = await _find(request, organisation, slug)
    if source == "config":
        raise GatewayError(409, f"Endpoint '{slug}' comes from the configuration file and is read-only here.", code="read_only", type="invalid_request_error")
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    try:
        updated = EndpointConfig.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise invalid_request(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", param=".".join(str(p) for p in first["loc"])) from None
    _validate(gateway, org, updated)
    await anyio.to_thread.run_sync(partial(replace_endpoint, gateway.engine, organisation, updated))
    await _service(request).registry.refresh(force=True)
    await audit(request, admin, "endpoint.update", f"{organisation}/{slug}", {k: v for k, v in changes.items() if k not in ("system_prompt", "input_schema", "output_schema")})
    return _out(organisation, updated, "api")


@router.delete("/admin/v1/endpoints/{organisation}/{slug}")
async def remove_endpoint(organisation: str, slug: str, request: Request, gateway: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    _current, source = await _find(request, organisation, slug)
    if source == "config":
        raise GatewayError(409, f"Endpoint '{slug}' comes from the configuration file and is read-only here.", code="read_only", type="invalid_request_error")
    await anyio.to_thread.run_sync(partial(delete_endpoint, gateway.engine, organisation, slug))
    await _service(request).registry.refresh(force=True)
    await audit(request, admin, "endpoint.delete", f"{organisation}/{slug}")
    return {"organisation": organisation, "slug": slug, "deleted": True}
