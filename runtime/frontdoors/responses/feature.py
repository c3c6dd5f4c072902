"""The Responses front door, as the app factory plugs it in: its routes and the purge of expired stored responses."""

from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from runtime.api.errors import error_response
from runtime.api.feature import RouterFeature, in_background
from runtime.frontdoors.responses import purge_expired
from runtime.frontdoors.responses.routes import router
from runtime.frontdoors.responses.store import StoredResponse


def _purging(app: FastAPI) -> AbstractAsyncContextManager[None]:
    return in_background(purge_expired(app.state.gateway))


FEATURE = RouterFeature("responses", (router,), direct=(("/v1/responses", error_response),), lifespan=_purging, tables=(StoredResponse,))
