"""Endpoints, as the app factory plugs them in: their routes, the service every caller shares
(``app.state.endpoints``) and the purge of expired sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runtime.api.feature import RouterFeature, in_background
from runtime.endpoints import purge_expired_sessions
from runtime.endpoints.pipeline import EndpointService
from runtime.endpoints.routes import router
from runtime.endpoints.sessions import EndpointSession
from runtime.endpoints.store import StoredEndpoint


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[None]:
    app.state.endpoints = EndpointService(app.state.gateway)
    async with in_background(purge_expired_sessions(app.state.endpoints)):
        yield


FEATURE = RouterFeature("endpoints", (router,), lifespan=_serving, tables=(StoredEndpoint, EndpointSession))
