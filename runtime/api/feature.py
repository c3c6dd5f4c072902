"""What a feature is to the app factory: its routes, its tables, and what it runs while the app serves.

Every feature (each front door, endpoints, the control plane, the console, WhatsApp,
telemetry's routes) plugs into ``runtime.api.app.create_app`` through the one declared
list in ``runtime.api.features``; the factory names none of them. First-party features
go through the same door a third-party one would (datasette's default plugins, in spirit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI
from sqlmodel import SQLModel

from runtime.api.direct import DirectRoute, ErrorResponse

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class Feature(Protocol):
    @property
    def name(self) -> str: ...

    def install(self, app: FastAPI) -> Sequence[DirectRoute]:
        """Add the feature's routes to the app; returns the POST routes to serve in front of FastAPI's stack."""
        ...

    def running(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        """What the feature runs while the app serves (``app.state.gateway`` is open by then)."""
        ...

    @property
    def envelopes(self) -> Mapping[str, ErrorResponse]:
        """Error envelopes by path prefix, for refusals made before any route runs (the request guard)."""
        ...

    @property
    def tables(self) -> Sequence[type[SQLModel]]:
        """The tables the feature owns (its migrations are revisions in ``runtime/storage/migrations/versions/``)."""
        ...


@dataclass(frozen=True)
class RouterFeature:
    """A feature made of routers, with what it runs in the background, if anything."""

    name: str
    routers: tuple[APIRouter, ...] = ()
    # (path, error envelope) of the first router's POST routes that carry the model traffic.
    direct: tuple[tuple[str, ErrorResponse], ...] = ()
    lifespan: Lifespan | None = None
    # Path prefix -> the error envelope of its refusals made before a route runs (body too large, say).
    envelopes: Mapping[str, ErrorResponse] = field(default_factory=dict)
    tables: tuple[type[SQLModel], ...] = ()

    def install(self, app: FastAPI) -> Sequence[DirectRoute]:
        for router in self.routers:
            app.include_router(router)
        return [DirectRoute.post(self.routers[0], path, error_response) for path, error_response in self.direct]

    def running(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        return self.lifespan(app) if self.lifespan is not None else contextlib.nullcontext()


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` (a periodic purge, say) while the app serves; cancelled when it stops."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
