"""The Anthropic Messages front door, as the app factory plugs it in (errors in Anthropic's envelope)."""

from runtime.api.feature import RouterFeature
from runtime.frontdoors.messages.routes import error_response, router

FEATURE = RouterFeature(
    "messages", (router,), direct=(("/v1/messages", error_response),), envelopes={"/v1/messages": error_response}
)
