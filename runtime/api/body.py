"""Reading request bodies with a size cap: refused by ``Content-Length`` first, and
never read past the cap, so an oversized body costs no more memory than the cap."""

from __future__ import annotations

from starlette.requests import Request

from runtime.errors import request_too_large


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
