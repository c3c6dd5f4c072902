"""``/mcp``, as the app factory plugs it in: its route, and the session manager while the app serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from sqlmodel import SQLModel

from runtime.api.direct import DirectRoute, ErrorResponse
from runtime.frontdoors.mcp.routes import McpFrontDoor, jsonrpc_error_response


class McpFeature:
    name = "mcp"
    # A body refused before the route runs, as a JSON-RPC error (what MCP clients read).
    envelopes: Mapping[str, ErrorResponse] = {"/mcp": jsonrpc_error_response}
    tables: Sequence[type[SQLModel]] = ()

    def install(self, app: FastAPI) -> Sequence[DirectRoute]:
        # One front door per app: its session manager runs once per lifespan.
        door = app.state.mcp_front_door = McpFrontDoor()
        app.router.routes.append(door.route())
        return ()

    def running(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        door: McpFrontDoor = app.state.mcp_front_door
        return door.serving(app.state.gateway)


FEATURE = McpFeature()
