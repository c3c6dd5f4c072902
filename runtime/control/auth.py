"""Who may use the management API and the console: admin keys (``pwa_...``) only.

No key is a 401; a gateway key is a 403 ``insufficient_permissions``; an
unknown or revoked admin key is a 401. Every admin action is audited with the
admin key that made it and the client's address.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from runtime.api.deps import presented_key
from runtime.errors import insufficient_permissions, invalid_api_key
from runtime.storage.keys import ADMIN_KEY_PREFIX, AdminInfo, AdminKeyCache


def admin_keys(request: Request) -> AdminKeyCache:
    cache: AdminKeyCache | None = getattr(request.app.state, "admin_keys", None)
    if cache is None:
        gateway = request.app.state.gateway
        cache = request.app.state.admin_keys = AdminKeyCache(gateway.engine, ttl_s=gateway.settings.key_cache_ttl_s)
    return cache


async def require_admin(request: Request) -> AdminInfo:
    # The request guard (runtime.api.guard) checks the key before the body is read; the route's
    # dependency then finds the same request's answer instead of looking the key up again.
    checked: AdminInfo | None = getattr(request.state, "admin", None)
    if checked is not None:
        return checked
    presented = presented_key(request)
    if presented is None:
        raise invalid_api_key("The management API needs an admin key: 'Authorization: Bearer pwa_...'.")
    if not presented.startswith(ADMIN_KEY_PREFIX):
        raise insufficient_permissions("Gateway keys cannot use the management API; use an admin key (pwa_...).")
    info = await admin_keys(request).lookup(presented)
    if info is None:
        raise invalid_api_key("Unknown or revoked admin key.")
    request.state.admin = info
    return info


AdminDep = Annotated[AdminInfo, Depends(require_admin)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None
