"""An upstream server's elicitation, forwarded to the ``/mcp`` client whose call caused it.

The runtime's MCP connection hands a server's ``elicitation/create`` to the
``ctx.elicit`` of the exact call it belongs to (as it does sampling); on
``/mcp`` that is one of these, built from what the client declared:

- a client that declared no ``elicitation`` capability (or not the mode asked
  for: ``form``, or ``url``) gets no elicitor for that mode, and the server is
  declined as inside the loop;
- a handshake-era (2025) client is asked with a server-to-client request on
  its session, tied to the ``tools/call`` it made (``related_request_id``);
- a 2026-07-28 client cannot be sent requests: the call answers an
  ``InputRequiredResult`` carrying the question, the upstream call waits
  (parked, in this process, for the key that made it), and the client's retry
  with ``inputResponses`` and the echoed ``requestState`` hands the answer on
  and carries on waiting for the result (or the next question).

The same elicitor shows a per-user server's authorization link (``url_prompt``):
a client that declared URL mode opens it, accepts, and the call carries on as
that user; any other gets the link as the tool result.

The person's time does not count against ``tool_timeout_s`` (the call may wait
up to ``tool_max_s``), as with sampling.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata

from runtime.orchestration.events import ToolCallFinished
from runtime.plugin_host.tool import Elicitor, ToolError, UrlPrompt

# The key of the one question an InputRequiredResult of ours carries.
QUESTION = "elicitation"


def client_modes(ctx: ServerRequestContext[Any, Any]) -> frozenset[str]:
    """The elicitation modes the client declared: an empty ``elicitation`` object means form (as the spec says)."""
    capabilities = ctx.session.client_capabilities
    declared = capabilities.elicitation if capabilities is not None else None
    if declared is None:
        return frozenset()
    modes = set()
    if declared.form is not None or declared.url is None:
        modes.add("form")
    if declared.url is not None:
        modes.add("url")
    return frozenset(modes)


def request_params(params: dict[str, Any], modes: frozenset[str]) -> types.ElicitRequestFormParams | types.ElicitRequestURLParams:
    """The upstream's question, if this client can answer its mode (else ToolError: the upstream is declined)."""
    mode = params.get("mode") or "form"
    if mode not in modes:
        raise ToolError(f"the MCP client did not declare {mode} elicitation")
    if mode == "url":
        url = types.ElicitRequestURLParams.model_validate(params)
        # Required on the handshake-era wire; the 2026 wire leaves it out.
        return url if url.elicitation_id else url.model_copy(update={"elicitation_id": str(uuid.uuid4())})
    return types.ElicitRequestFormParams.model_validate(params)


def answer_of(result: types.ElicitResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")


def session_elicitor(ctx: ServerRequestContext[Any, Any], modes: frozenset[str]) -> Elicitor:
    """Asks a handshake-era client on its session, tied to the request being served."""

    async def elicit(params: dict[str, Any]) -> dict[str, Any]:
        question = request_params(params, modes)
        result = await ctx.session.send_request(
            types.ElicitRequest(params=question),
            types.ElicitResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
        return answer_of(result)

    return elicit


def url_prompt(elicit: Elicitor) -> UrlPrompt:
    """Shows the client's user a link to open (URL elicitation) and waits: True only if they accepted.

    A client that cannot do URL mode (``request_params`` refuses it), or whose user
    declines or dismisses it, is False: the caller answers the link as the tool result.
    """

    async def ask(message: str, url: str) -> bool:
        try:
            answer = await elicit({"mode": "url", "message": message, "url": url})
        except ToolError:
            return False
        return answer.get("action") == "accept"

    return ask


@dataclass(eq=False)
class _Parked:
    """A call waiting for its 2026 client's answer."""

    key_id: str
    modes: frozenset[str]
    questions: asyncio.Queue[tuple[types.ElicitRequestFormParams | types.ElicitRequestURLParams, asyncio.Future[dict[str, Any]]]] = field(
        default_factory=asyncio.Queue
    )
    task: asyncio.Task[ToolCallFinished] | None = None
    waiting: asyncio.Future[dict[str, Any]] | None = None


class ParkedCalls:
    """Calls of 2026 clients that asked a question and wait for the retry carrying the answer."""

    def __init__(self) -> None:
        self._parked: dict[str, _Parked] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def start(
        self, key_id: str, modes: frozenset[str], run: Callable[[Elicitor], Coroutine[Any, Any, ToolCallFinished]]
    ) -> _Parked:
        parked = _Parked(key_id, modes)

        async def elicit(params: dict[str, Any]) -> dict[str, Any]:
            question = request_params(params, parked.modes)
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            parked.questions.put_nowait((question, answer))
            return await answer

        parked.task = asyncio.create_task(run(elicit))
        return parked

    def resume(self, key_id: str, state: str, responses: dict[str, Any] | None) -> _Parked:
        """The parked call ``state`` names, given the client's answer; only the key that started it may resume it."""
        parked = self._parked.get(state)
        if parked is None or parked.key_id != key_id:
            raise MCPError(types.INVALID_PARAMS, "The requestState is unknown or expired: call the tool again.")
        del self._parked[state]
        response = (responses or {}).get(QUESTION)
        waiting = parked.waiting
        parked.waiting = None
        if waiting is not None and not waiting.done():
            if response is None:
                # The client retried without answering: as good as dismissing the question.
                waiting.set_result({"action": "cancel"})
            else:
                dumped = response.model_dump(by_alias=True, exclude_none=True, mode="json") if hasattr(response, "model_dump") else response
                waiting.set_result(answer_of(types.ElicitResult.model_validate(dumped)))
        return parked

    async def outcome(self, parked: _Parked) -> ToolCallFinished | types.InputRequiredResult:
        """The call's result, or (when it asks first) the question for the client, with the state to resume it."""
        assert parked.task is not None
        asked = asyncio.ensure_future(parked.questions.get())
        try:
            await asyncio.wait({parked.task, asked}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The client went away (or cancelled the call): so does the call.
            parked.task.cancel()
            asked.cancel()
            raise
        if not asked.done():
            asked.cancel()
            return parked.task.result()
        question, answer = asked.result()
        parked.waiting = answer
        state = secrets.token_urlsafe(24)
        self._parked[state] = parked
        # A call that ends without its client coming back (its deadline) is forgotten.
        parked.task.add_done_callback(lambda _task: self._parked.pop(state, None))
        return types.InputRequiredResult(input_requests={QUESTION: types.ElicitRequest(params=question)}, request_state=state)

    def close(self) -> None:
        for parked in self._parked.values():
            if parked.task is not None:
                parked.task.cancel()
        self._parked.clear()

