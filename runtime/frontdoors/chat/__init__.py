"""``POST /v1/chat/completions``: the OpenAI chat-completions front door."""

from runtime.frontdoors.chat.routes import router

__all__ = ["router"]
