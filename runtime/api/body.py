"""Reading request bodies with a size cap: refused by ``Content-Length`` first, and
never read past the cap, so an oversized body costs no more memory than the cap.
``read_json`` is every JSON route's body: capped, parsed, and a clear 400 when it is
not JSON (each feature's error route puts that in its own envelope)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from runtime.errors import invalid_request, request_too_large


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise request_too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise request_too_large(limit)
    return bytes(body)


def parse_json_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("We could not parse the JSON body of your request.") from None


async def read_json(request: Request, limit: int) -> Any:
    """The request's body, at most ``limit`` bytes, parsed as JSON."""
    return parse_json_body(await read_body(request, limit))
