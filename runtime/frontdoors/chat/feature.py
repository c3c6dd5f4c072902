"""The chat completions front door, as the app factory plugs it in."""

from runtime.api.errors import error_response
from runtime.api.feature import RouterFeature
from runtime.frontdoors.chat.routes import router

FEATURE = RouterFeature("chat", (router,), direct=(("/v1/chat/completions", error_response),))
