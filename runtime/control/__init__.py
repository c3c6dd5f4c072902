"""The control plane: the management API under ``/admin/v1`` (admin keys only).

Organisations, gateway keys, endpoints, usage, plugins, WhatsApp, the audit
log, a detailed health view and the console's playground; every resource in
the OpenAPI schema. Lists answer ``{"data": [...], "next_cursor": ...}``;
errors use the OpenAI envelope.
"""

from __future__ import annotations

from fastapi import APIRouter

from runtime.control.routes import (
    audit,
    endpoints,
    health,
    keys,
    organisations,
    playground,
    plugins,
    usage,
    whatsapp,
)

router = APIRouter()
for module in (organisations, keys, endpoints, usage, plugins, whatsapp, audit, health, playground):
    router.include_router(module.router)

__all__ = ["router"]
