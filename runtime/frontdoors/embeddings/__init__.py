"""``POST /v1/embeddings``: OpenAI's embeddings API through the same keys, limits, budgets and billing as chat.

A model serves embeddings when its configuration says ``embeddings: true``
(``GET /v1/models`` shows the flag) and its provider can: OpenAI-compatible
providers (``POST {base_url}/embeddings``) and the offline demo (deterministic,
labelled hash vectors). A model served by a kind without embeddings
(anthropic) is a clear 400.
"""

from runtime.frontdoors.embeddings.routes import router

__all__ = ["router"]
