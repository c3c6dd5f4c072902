"""A local stand-in for Meta's Graph API messages endpoint, on a real HTTP port.

It speaks the Cloud API's wire format: ``POST /{version}/{phone_number_id}/messages``
with a bearer token; text sends answer
``{"messaging_product":"whatsapp","contacts":[...],"messages":[{"id":"wamid..."}]}``,
mark-read answers ``{"success":true}``, and failures answer Meta's error
envelope ``{"error":{"message","type","code","error_data":{"details"},"fbtrace_id"}}``
with the HTTP status Meta uses (400 for most coded errors, 5xx for outages).

Tests script failures with :meth:`FakeGraphAPI.fail_next` and read what was
received from :attr:`FakeGraphAPI.sends` / :attr:`FakeGraphAPI.reads`.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.threaded import ThreadedServer

# Meta's own wording for the errors the worker must tell apart.
ERRORS: dict[int, tuple[int, str, str]] = {
    131047: (
        400,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    ),
    131026: (400, "(#131026) Message Undeliverable", "Message could not be delivered."),
    130429: (
        400,
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.",
    ),
    131000: (500, "(#131000) Something went wrong", "Message failed to send due to an unknown error."),
    131016: (503, "(#131016) Service unavailable", "A service is temporarily unavailable."),
    100: (400, "(#100) Invalid parameter", "Parameter value is not valid"),
    190: (401, "Error validating access token: Session has expired.", "Access token expired"),
}


@dataclass
class Failure:
    code: int | None  # None: a bare 5xx outage (Meta's transient code 2)
    http_status: int | None = None
    stall_s: float = 0.0  # > 0: hold the answer this long (a client timeout is a network error)


@dataclass
class Received:
    phone_number_id: str
    token: str | None
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeGraphAPI:
    def __init__(self, *, tokens: dict[str, str] | None = None, version: str = "v23.0") -> None:
        self.version = version
        self.tokens = dict(tokens or {})  # phone_number_id -> expected access token
        self.sends: list[Received] = []
        self.reads: list[Received] = []
        self.rejected: list[tuple[Received, int]] = []
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._runner: ThreadedServer | None = None
        self.port = 0

    # --- scripting ---------------------------------------------------------

    def fail_next(self, code: int | None, *, times: int = 1, http_status: int | None = None) -> None:
        """The next ``times`` text sends fail with Meta error ``code`` (None: HTTP 503 outage)."""
        with self._lock:
            self._failures.extend(Failure(code, http_status) for _ in range(times))

    def stall_next(self, seconds: float, *, times: int = 1) -> None:
        with self._lock:
            self._failures.extend(Failure(None, stall_s=seconds) for _ in range(times))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.version}"

    def sent_to(self, recipient: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.sends if r.body.get("to") == recipient]

    def texts_to(self, recipient: str) -> list[str]:
        return [b["text"]["body"] for b in self.sent_to(recipient)]

    # --- HTTP --------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        phone_number_id = request.path_params["phone_number_id"]
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 100, "(#100) The parameter messaging_product is required.", None)
        received = Received(phone_number_id, token, body)
        expected = self.tokens.get(phone_number_id)
        if token is None or (expected is not None and token != expected):
            with self._lock:
                self.rejected.append((received, 190))
            status, message, details = ERRORS[190]
            return _error(status, 190, message, details, type_="OAuthException")
        if body.get("messaging_product") != "whatsapp":
            return _error(400, 100, "(#100) The parameter messaging_product is required.", None)

        if body.get("status") == "read":
            if not body.get("message_id"):
                return _error(400, 100, "(#100) The parameter message_id is required.", None)
            with self._lock:
                self.reads.append(received)
            return JSONResponse({"success": True})

        if body.get("type") != "text" or not body.get("to"):
            return _error(400, 100, "(#100) Invalid parameter", "type/to missing")
        text = (body.get("text") or {}).get("body") or ""
        if not text or len(text) > 4096:
            return _error(400, 100, "(#100) Invalid parameter", "Param text['body'] must be at most 4096 characters long.")
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            with self._lock:
                self.rejected.append((received, failure.code or 2))
            if failure.stall_s:
                await asyncio.sleep(failure.stall_s)
            if failure.code is None:
                return _error(
                    failure.http_status or 503,
                    2,
                    "An unexpected error has occurred. Please retry your request later.",
                    None,
                    transient=True,
                )
            status, message, details = ERRORS[failure.code]
            return _error(failure.http_status or status, failure.code, message, details)
        with self._lock:
            self.sends.append(received)
        to = str(body["to"])
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": "wamid.HBgL" + secrets.token_hex(16).upper()}],
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{version}/{phone_number_id}/messages", self._messages, methods=["POST"])]
        )

    # --- lifecycle (own thread and loop: unaffected by what the test loop is doing) ---

    def start(self) -> FakeGraphAPI:
        self._runner = ThreadedServer(self.app(), name="fake Graph API")
        self.port = self._runner.start(timeout_s=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop(timeout_s=10)


def _error(
    status: int,
    code: int,
    message: str,
    details: str | None,
    *,
    type_: str = "OAuthException",
    transient: bool = False,
) -> JSONResponse:
    error: dict[str, Any] = {
        "message": message,
        "type": type_,
        "code": code,
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if transient:
        error["is_transient"] = True
    return JSONResponse({"error": error}, status_code=status)
