"""The one internal interface every provider adapter implements.

The OpenAI chat-completions wire format is the lingua franca: a provider takes
an OpenAI request body (a dict, ``model`` already set to the upstream model
name) and returns an OpenAI ``chat.completion`` dict, or for streams an async
iterator of ``chat.completion.chunk`` dicts. Adapters for other wire formats
(Anthropic) translate both ways inside the adapter and nowhere else.

Failures raise :class:`runtime.errors.UpstreamError`.

Streams: ``stream_chat`` always yields the usage chunk last (``choices: []``,
``usage`` set) when the upstream reports usage; callers ask for it by setting
``stream_options.include_usage``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, runtime_checkable

JSON = dict[str, Any]


@runtime_checkable
class Provider(Protocol):
    id: str
    kind: str

    async def chat(self, body: JSON) -> JSON:
        """One non-streamed completion; ``body["stream"]`` is false or absent."""
        ...

    def stream_chat(self, body: JSON) -> AsyncGenerator[JSON, None]:
        """One streamed completion, as OpenAI chunk dicts (async generator)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
