"""A small client for the Graph API's messages endpoint: send text, mark read with typing.

Errors are classified by Meta's error code, not by the HTTP status alone: Meta
answers most errors, throttling included, with HTTP 400.
"""

from __future__ import annotations

from typing import Any

import httpx

from runtime.config import WhatsAppAppConfig

# Codes worth another try later: throttling and Meta-side trouble.
RETRYABLE_CODES = frozenset(
    {
        1,  # API unknown
        2,  # API service (temporary)
        4,  # application request limit
        17,  # user request limit
        80007,  # WABA rate limit
        130429,  # cloud API throughput limit
        131000,  # something went wrong
        131016,  # service unavailable
        131056,  # business/consumer pair rate limit
        133004,  # server temporarily unavailable
    }
)
# For the record (everything else non-5xx is also permanent): 131047 outside the
# 24-hour window, 131026 undeliverable, 131051 unsupported type, 100 invalid
# parameter, 190 expired token, 10/200 permissions, 131031 account locked.


class GraphError(Exception):
    """A failed Graph API call; ``retryable`` says whether trying later could help."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None,
        http_status: int | None,
        retryable: bool,
        details: str | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retryable = retryable
        self.details = details
        self.fbtrace_id = fbtrace_id

    def describe(self) -> str:
        """One line for ``last_error``: code, message, details, trace id."""
        if self.code is not None:
            text = f"{self.code}: {self.message}"
        elif self.http_status is not None:
            text = f"HTTP {self.http_status}: {self.message}"
        else:
            text = self.message
        if self.details:
            text += f" ({self.details})"
        if self.fbtrace_id:
            text += f" [fbtrace_id {self.fbtrace_id}]"
        return text


def classify(http_status: int, body: Any) -> GraphError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(
            f"unexpected Graph API answer (HTTP {http_status})",
            code=None,
            http_status=http_status,
            retryable=http_status >= 500 or http_status == 429,
        )
    code = error.get("code")
    code = code if isinstance(code, int) else None
    retryable = (
        http_status >= 500
        or http_status == 429
        or code in RETRYABLE_CODES
        or bool(error.get("is_transient"))
    )
    details = (error.get("error_data") or {}).get("details")
    return GraphError(
        str(error.get("message") or "Graph API error"),
        code=code,
        http_status=http_status,
        retryable=retryable,
        details=str(details) if details else None,
        fbtrace_id=error.get("fbtrace_id"),
    )


class GraphClient:
    def __init__(self, base_url: str, *, timeout_s: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"User-Agent": "plugway-whatsapp"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send_text(
        self, app: WhatsAppAppConfig, *, to: str, body: str, reply_to: str | None = None
    ) -> str:
        """Send one text message; returns the outbound wamid."""
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": body},
        }
        if reply_to:
            payload["context"] = {"message_id": reply_to}
        answer = await self._post(app, payload)
        try:
            return str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise GraphError(
                "send answer carries no message id", code=None, http_status=200, retryable=False
            ) from None

    async def mark_read(self, app: WhatsAppAppConfig, message_id: str, *, typing: bool = True) -> None:
        """Blue ticks for ``message_id``, and the typing indicator (up to 25 s or the reply)."""
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        await self._post(app, payload)

    async def _post(self, app: WhatsAppAppConfig, payload: dict[str, Any]) -> Any:
        url = f"{self.base_url}/{app.phone_number_id}/messages"
        try:
            response = await self._http.post(
                url, json=payload, headers={"Authorization": f"Bearer {app.access_token}"}
            )
        except httpx.HTTPError as exc:
            raise GraphError(
                f"network error: {type(exc).__name__}: {exc}".rstrip(": "),
                code=None,
                http_status=None,
                retryable=True,
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or (isinstance(body, dict) and "error" in body):
            raise classify(response.status_code, body)
        return body
