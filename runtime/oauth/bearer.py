"""An OAuth access token on ``/mcp``: the gateway key it acts as, if it is live and for this resource.

Looked-up tokens are cached like gateway keys (``key_cache_ttl_s``), never past the
token's own expiry: a revocation in the console bites within that time everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import Request

from runtime.config import OAuthServerConfig
from runtime.errors import database_unavailable
from runtime.oauth import store
from runtime.oauth.server import SCOPES, public_base, resource_url
from runtime.storage.engine import OUTAGE_ERRORS
from runtime.storage.keys import KeyInfo, hash_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

PROTECTED_RESOURCE_PATH = "/.well-known/oauth-protected-resource"


class OAuthBearer:
    """What the ``/mcp`` door asks about a Bearer credential that is not a gateway key."""

    def __init__(self, settings: OAuthServerConfig, engine: Callable[[], Engine], *, ttl_s: Callable[[], float]) -> None:
        self.settings = settings
        self._engine = engine
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, store.AccessGrant | None]] = {}

    def handles(self, presented: str) -> bool:
        return presented.startswith(store.ACCESS_TOKEN_PREFIX) and len(presented) <= 200

    async def resolve(self, request: Request, presented: str) -> KeyInfo | None:
        """The key the token acts as; None when it is unknown, expired, revoked or for another resource."""
        found = await self._lookup(presented)
        if found is None:
            return None
        if found.resource != resource_url(public_base(request, self.settings)):
            return None
        # For whoever serves the request after the door: which grant, which application, who consented.
        request.state.oauth = found
        return found.key

    async def _lookup(self, presented: str) -> store.AccessGrant | None:
        digest = hash_key(presented)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await anyio.to_thread.run_sync(partial(store.resolve_access, self._engine(), presented))
        except OUTAGE_ERRORS:
            raise database_unavailable() from None
        ttl = self._ttl_s()
        if ttl > 0:
            if len(self._entries) >= 100_000:
                self._entries.clear()
            self._entries[digest] = (now + (ttl if found else min(1.0, ttl)), found)
        return found

    def challenge(self, request: Request) -> str:
        """The parameters of ``WWW-Authenticate: Bearer`` that send an MCP client to sign in (RFC 9728 §5.1)."""
        base = public_base(request, self.settings)
        return f'resource_metadata="{base}{PROTECTED_RESOURCE_PATH}/mcp", scope="{" ".join(SCOPES)}"'
