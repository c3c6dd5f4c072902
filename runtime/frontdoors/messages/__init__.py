"""``/v1/messages``: Anthropic's Messages API for any configured model, plugins as MCP connector servers."""

from runtime.frontdoors.messages.routes import router

__all__ = ["router"]
