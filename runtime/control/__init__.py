"""The control plane: the management API under ``/admin/v1`` (admin keys only).

Organisations, gateway keys, endpoints, usage, the request log, plugins, the audit log, a
detailed health view and the console's playground; every resource in the
OpenAPI schema. (WhatsApp's conversations and dead letters are under
``/admin/v1/whatsapp``, served by the WhatsApp feature, ``workers.whatsapp.admin_routes``.) Lists answer ``{"data": [...], "next_cursor": ...}``;
errors use the OpenAI envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["router"]


def _build_router() -> APIRouter:
    from fastapi import APIRouter

    from runtime.control.routes import (
        audit,
        endpoints,
        health,
        keys,
        organisations,
        playground,
        plugins,
        requests,
        upstream_oauth,
        usage,
    )

    router = APIRouter()
    for module in (organisations, keys, endpoints, usage, requests, plugins, upstream_oauth, audit, health, playground):
        router.include_router(module.router)
    router.include_router(upstream_oauth.public_router)
    return router


def __getattr__(name: str) -> Any:
    # Built on first use: `plugway admin keys ...` imports runtime.control.cli without the web stack.
    if name == "router":
        router = _build_router()
        globals()["router"] = router
        return router
    raise AttributeError(name)
