"""The one internal interface every provider adapter implements (:class:`Provider`, declared in the registry).

The OpenAI chat-completions wire format is the lingua franca: a provider takes
an OpenAI request body (a dict, ``model`` already set to the upstream model
name) and returns an OpenAI ``chat.completion`` dict, or for streams an async
iterator of ``chat.completion.chunk`` dicts. Adapters for other wire formats
(Anthropic) translate both ways inside the adapter and nowhere else.

Failures raise :class:`runtime.errors.UpstreamError`. A body that cannot be
serialised (nested beyond the JSON encoder's depth limit) is the client's
error: :func:`encode_body` turns it into a 400, never a 500.

Streams: ``stream_chat`` always yields the usage chunk last (``choices: []``,
``usage`` set) when the upstream reports usage; callers ask for it by setting
``stream_options.include_usage``.
"""

from __future__ import annotations

import orjson

from runtime.errors import UpstreamError
from runtime.json_types import JSON
from runtime.providers.registry import Provider
from runtime.telemetry import current as telemetry

__all__ = ["Provider", "encode_body", "request_headers"]



def encode_body(body: JSON) -> bytes:
    """The request as JSON bytes; a body the encoder refuses is a request error, not ours."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise UpstreamError(
            f"The request cannot be forwarded: {exc}. Flatten deeply nested values.",
            status=None,
            retryable=False,
            client_error=True,
        ) from None


def request_headers(request_id: str | None) -> dict[str, str] | None:
    """Per-request headers: ``X-Request-Id``, and the current span's ``traceparent`` when tracing is on."""
    return telemetry().trace_headers({"X-Request-Id": request_id} if request_id else None)
