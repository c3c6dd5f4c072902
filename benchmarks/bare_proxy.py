"""The floor plugway is measured against: a bare Starlette + aiohttp proxy.

No authentication, no limits, no usage, no parsing: the request body goes to
the upstream as it came, and the answer comes back as the upstream sent it,
streamed chunk by chunk when the upstream streams (``text/event-stream``).
It runs under uvicorn with the same settings as ``plugway serve`` (one
worker, uvloop and httptools when installed, no access log), so the
difference between the two is the gateway's own work.

    python benchmarks/bare_proxy.py --upstream http://127.0.0.1:8081 --port 8090
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

HOP_HEADERS = {"content-type", "authorization"}


def build_app(upstream: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        headers = {name: value for name, value in request.headers.items() if name in HOP_HEADERS}
        upstream_response = await session.post(upstream + request.url.path, data=body, headers=headers)
        media_type = upstream_response.headers.get("content-type", "application/json")
        if media_type.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream_response.content.iter_any():
                        yield chunk
                finally:
                    upstream_response.release()

            return StreamingResponse(relay(), status_code=upstream_response.status, media_type=media_type)
        content = await upstream_response.read()
        upstream_response.release()
        return Response(content, status_code=upstream_response.status, media_type=media_type)

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
