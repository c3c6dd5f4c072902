"""What is known about the request being served, gathered as it goes and read when it ends.

The HTTP middleware (or the WhatsApp worker, for a message it answers) opens a
:class:`RequestRecord` in a context variable; admission fills in who asks for
what, usage accounting adds rounds, tokens and cost. Tasks the request starts
(a streamed run, tool calls) copy the context and so share the same record.
When the request ends, one record feeds the request metrics, the request's
log line and the request log (``runtime.requestlog``).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    route: str
    method: str
    started: float
    request_id: str = ""
    status: int = 0
    outcome: str = ""  # the gateway's own word for how the work ended: "ok" or an error code
    error_param: str | None = None  # the field an error answer names (its envelope's ``param``)
    organisation: str = ""
    key_id: str | None = None
    source: str = ""
    model: str = ""
    provider: str = ""
    rounds: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    trace_id: str | None = None
    content: dict[str, Any] | None = None  # logging.debug_content only
    # For the request log: when the first byte of the answer left, and why the request failed.
    first_byte: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    endpoint: str | None = None
    served_model: str = ""
    # Rounds and tool calls as they ran: {"kind", "round", "name", "plugin", "start_ms", "duration_ms", "outcome"}.
    timeline: list[dict[str, Any]] | None = None
    # The organisation's request_log.capture_bodies: the conversation sent upstream and the last answer.
    capture_bodies: bool = False
    request_body: dict[str, Any] | None = None
    response_body: dict[str, Any] | None = None


_current: ContextVar[RequestRecord | None] = ContextVar("plugway_request_record", default=None)


def current_record() -> RequestRecord | None:
    return _current.get()


def open_record(record: RequestRecord) -> Any:
    """Make ``record`` the current request's; returns the token for :func:`close_record`."""
    return _current.set(record)


def close_record(token: Any) -> None:
    _current.reset(token)
