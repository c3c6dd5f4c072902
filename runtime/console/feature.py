"""The web console, as the app factory plugs it in."""

from runtime.api.feature import RouterFeature
from runtime.console.routes import router

FEATURE = RouterFeature("console", (router,))
