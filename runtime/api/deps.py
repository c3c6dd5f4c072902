"""Request dependencies: the gateway, the request id, the caller's key.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool,
a thread hop per request for what is an attribute read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from runtime.errors import insufficient_permissions, invalid_api_key
from runtime.gateway import Gateway
from runtime.storage.keys import ADMIN_KEY_PREFIX, KeyInfo
from runtime.telemetry.record import current_record


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "")


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        # Anthropic's SDKs send the key as x-api-key.
        return request.headers.get("x-api-key") or None
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "bearer":
        return credentials or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        # `curl -u KEY:` puts the key in the user name; accept it as the password too.
        return user or password or None
    return None


async def authenticate(request: Request, gateway: Annotated[Gateway, Depends(get_gateway)]) -> KeyInfo:
    presented = presented_key(request)
    if presented is None:
        raise invalid_api_key(
            "You didn't provide an API key. Send 'Authorization: Bearer pw_...', 'x-api-key: pw_...' or HTTP Basic with the key as user name."
        )
    if presented.startswith(ADMIN_KEY_PREFIX):
        raise insufficient_permissions("Admin keys open only the management API and the console; call models with a gateway key (pw_...).")
    info = await gateway.keys.lookup(presented)
    if info is None:
        raise invalid_api_key(f"Incorrect API key provided: {presented[:6]}****{presented[-4:] if len(presented) > 10 else ''}.")
    return authenticated_as(request, info)


def authenticated_as(request: Request, info: KeyInfo) -> KeyInfo:
    """The request is the key's (a gateway key, or a credential that acts as one such as an OAuth token on /mcp)."""
    request.state.key = info
    record = current_record()
    if record is not None:
        # Known from here on, even if the request is refused before admission (an unknown model, say).
        record.organisation, record.key_id = info.organisation_id, info.id
    return info


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
KeyDep = Annotated[KeyInfo, Depends(authenticate)]
