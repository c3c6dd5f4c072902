"""Errors that leave the gateway in OpenAI's envelope.

Every error a client can see is a ``GatewayError``: the HTTP layer turns it into
``{"error": {"message", "type", "param", "code"}}`` with its status, so that the
official OpenAI SDKs raise the matching exception class.
"""

from __future__ import annotations

import math
from typing import Any


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type or code
        self.param = param
        self.headers = headers or {}
        # Fields beside message/type/param/code in the envelope (a guardrail's findings).
        self.extra = extra or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                **self.extra,
            }
        }


def invalid_request(message: str, *, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request_error", param=param)


def unsupported_parameter(param: str, message: str | None = None) -> GatewayError:
    return GatewayError(
        400,
        message or f"'{param}' is not supported by this gateway; use 'tools' and 'tool_choice'.",
        code="unsupported_parameter",
        type="invalid_request_error",
        param=param,
    )


def invalid_api_key(message: str = "Missing or invalid API key.") -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key", type="authentication_error")


def insufficient_permissions(message: str) -> GatewayError:
    return GatewayError(403, message, code="insufficient_permissions", type="permission_error")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist or is not available to this organisation.",
        code="model_not_found",
        type="invalid_request_error",
        param="model",
    )


def request_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than {limit} bytes.",
        code="request_too_large",
        type="invalid_request_error",
    )


def upstream_unavailable(message: str) -> GatewayError:
    return GatewayError(502, message, code="upstream_unavailable", type="api_error")


class UpstreamError(Exception):
    """A provider call failed.

    ``status`` is the provider's HTTP status (``None`` for connection errors and
    timeouts). ``retryable`` says whether trying again (or another provider)
    could help. ``client_error`` marks failures caused by the request itself
    (an upstream 400): those are passed back to the client as 400, never retried.
    ``retry_after`` is the provider's ``retry-after`` hint in seconds, if any.

    ``message`` is safe to show a client: it names the provider and the
    upstream status, and carries the upstream's own words only for request
    errors (those are about the client's request). ``detail`` is the
    upstream's whole text, for logs and traces only: a provider's 401 names
    its API key, a proxy's 502 an internal address.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        client_error: bool = False,
        param: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.client_error = client_error
        self.param = param
        self.retry_after = retry_after
        self.detail = detail

    @property
    def throttled(self) -> bool:
        """The provider said "too many requests": it is healthy, just busy."""
        return self.status == 429

    def for_logs(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail and self.detail not in self.message else self.message


def upstream_throttled(message: str, retry_after: float | None) -> GatewayError:
    """Every provider of the model said 429: the client should slow down, as with OpenAI."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else {}
    return GatewayError(429, message, code="rate_limit_exceeded", type="requests", headers=headers)


def rate_limit_exceeded(message: str, *, limit_type: str, headers: dict[str, str]) -> GatewayError:
    # OpenAI reports type "requests" (RPM) or "tokens".
    return GatewayError(429, message, code="rate_limit_exceeded", type=limit_type, headers=headers)


def rate_limiter_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The rate limiter is unavailable, so the request was refused (fail closed). Try again shortly.",
        code="rate_limiter_unavailable",
        type="api_error",
        headers={"Retry-After": "1"},
    )


def database_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway's database is unavailable, so the request could not be served. Try again shortly.",
        code="database_unavailable",
        type="api_error",
        headers={"Retry-After": "2"},
    )


def guardrail_blocked(guardrail_key: str, findings: list[Any]) -> GatewayError:
    """A guardrail refused the content: 400 with the guardrail and what kind of thing it found, never the text."""
    kinds = ", ".join(dict.fromkeys(str(f.message) for f in findings)) or "refused content"
    return GatewayError(
        400,
        "Content blocked by guardrail",
        code="guardrail_block",
        type="guardrail_block",
        extra={
            "guardrail_key": guardrail_key,
            "action": "block",
            "findings": [{"category": f.category, "message": f.message} for f in findings],
            "detail": f"guardrail '{guardrail_key}' found: {kinds}",
        },
    )
