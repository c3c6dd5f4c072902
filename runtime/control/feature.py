"""The management API under ``/admin/v1``, as the app factory plugs it in; it purges the request log it serves."""

from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from runtime.api.feature import RouterFeature, in_background
from runtime.control import router
from runtime.requestlog.store import purge_forever as purge_request_log


def _purging(app: FastAPI) -> AbstractAsyncContextManager[None]:
    return in_background(purge_request_log(app.state.gateway))


FEATURE = RouterFeature("control", (router,), lifespan=_purging)
