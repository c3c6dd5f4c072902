"""The features the app serves, in the order their routes are matched and their lifespans entered.

The one list the app factory plugs in (``runtime.api.app.create_app``). A feature is a
package with a ``feature.py`` whose ``FEATURE`` satisfies :class:`~runtime.api.feature.Feature`;
adding one is adding it here. The core (admission, the loop, providers, the MCP client,
accounting) imports none of them (``tests/test_architecture.py``).
"""

from __future__ import annotations

from runtime.api.feature import Feature, RouterFeature
from runtime.api.routes import health, models, usage
from runtime.console.feature import FEATURE as CONSOLE
from runtime.control.feature import FEATURE as CONTROL
from runtime.endpoints.feature import FEATURE as ENDPOINTS
from runtime.frontdoors.chat.feature import FEATURE as CHAT
from runtime.frontdoors.embeddings.feature import FEATURE as EMBEDDINGS
from runtime.frontdoors.mcp.feature import FEATURE as MCP
from runtime.frontdoors.messages.feature import FEATURE as MESSAGES
from runtime.frontdoors.responses.feature import FEATURE as RESPONSES
from runtime.oauth.feature import FEATURE as OAUTH_SERVER
from runtime.telemetry import routes as telemetry_routes
from workers.whatsapp.feature import FEATURE as WHATSAPP

# The gateway's own routes: models, health and readiness, a key's usage; and /metrics.
GATEWAY = RouterFeature("gateway", (models.router, health.router, usage.router))
METRICS = RouterFeature("metrics", (telemetry_routes.router,))

FEATURES: tuple[Feature, ...] = (
    CHAT,
    RESPONSES,
    MESSAGES,
    ENDPOINTS,
    CONTROL,
    CONSOLE,
    GATEWAY,
    WHATSAPP,
    EMBEDDINGS,
    METRICS,
    MCP,
    OAUTH_SERVER,
)
