"""The embeddings front door, as the app factory plugs it in."""

from runtime.api.feature import RouterFeature
from runtime.frontdoors.embeddings.routes import router

FEATURE = RouterFeature("embeddings", (router,))
