"""The management API under ``/admin/v1``, as the app factory plugs it in."""

from runtime.api.feature import RouterFeature
from runtime.control import router

FEATURE = RouterFeature("control", (router,))
