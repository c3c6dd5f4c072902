"""The endpoint pipeline: each step before the next, so a failing early step costs nothing later.

auth (401, the route's dependency) → key belongs to this organisation (403) →
scope (403) → endpoint exists and is active (404) → the key may use its model
(403) → body, streaming and sessions allowed (400/422) → per-request token cap
(422 naming the limit) → admission's last steps (``runtime.admission.admit``):
budget (422 ``budget_exceeded``), then rate limit (429 + Retry-After), so a
refused request spends none of the key's RPM → guardrails on input
(422 naming the guardrail) → input schema (422 with the validator's detail) →
prompt applied (422 naming a missing variable) → provider with retries and
fallbacks (502) → output schema (502 with the validator's detail, after one
repair attempt that tells the model what failed) → usage recorded → answer.

Errors: ``{"ok": false, "error": "<message>", "code": "<code>"}`` with the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
from sqlalchemy.exc import IntegrityError

from runtime.admission import admit, check_scope
from runtime.api import sse
from runtime.config import ORCHESTRATION_MODES, EndpointConfig, OrganisationConfig
from runtime.endpoints import sessions
from runtime.endpoints.store import EndpointRegistry
from runtime.errors import GatewayError, guardrail_blocked
from runtime.frontdoors.chat.encoder import ChatStreamEncoder
from runtime.gateway import Gateway
from runtime.guardrails import GuardrailBlocked
from runtime.json_schema import mismatch, validator_for
from runtime.json_types import JSON
from runtime.limits.reservation import estimated_tokens
from runtime.orchestration.events import Completed, Event
from runtime.prompt_template import MissingVariable, render
from runtime.reasoning import REASONING_PARTS
from runtime.request import DoorRules, KeepAlive, PluginRequest, RequestContext, RunRequest
from runtime.storage.keys import KeyInfo
from runtime.text import quoted

# Endpoints bring their own guardrails (the endpoint's list, not the organisation's default).
ENDPOINT_DOOR = DoorRules("endpoint")
# How long one request may hold its session (a crashed holder's lease expires after this).
SESSION_LEASE_S = 600.0
# How long a request waits for another request on the same session to finish.
SESSION_WAIT_S = 120.0
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


class EndpointError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> JSON:
        return {"ok": False, "error": self.message, "code": self.code}

    @classmethod
    def from_gateway(cls, error: GatewayError) -> EndpointError:
        if error.code == "guardrail_block":
            # Endpoints answer a guardrail's block with 422, naming the guardrail and what it found.
            return cls(422, "guardrail_block", f"{error.message}: {error.extra.get('detail', '')}".rstrip(": "), error.headers)
        return cls(error.status, error.code, error.message, error.headers)


def _invalid(message: str) -> EndpointError:
    return EndpointError(400, "invalid_request", message)


@dataclass
class EndpointCall:
    """An endpoint request body."""

    messages: list[JSON]
    session_id: str | None = None
    variables: JSON = field(default_factory=dict)
    input: Any = None
    stream: bool = False
    request_id: str | None = None
    max_tokens: int | None = None
    orchestration_mode: str | None = None
    user: str | None = None  # the end user the call is for (per-user MCP servers run as them)

    @classmethod
    def parse(cls, body: Any) -> EndpointCall:
        if not isinstance(body, dict):
            raise _invalid("The body must be a JSON object.")
        message, messages = body.get("message"), body.get("messages")
        if message is not None and messages is not None:
            raise _invalid("Give 'message' or 'messages', not both.")
        if message is not None:
            if not isinstance(message, str):
                raise _invalid("'message' must be a string.")
            turns = [{"role": "user", "content": message}]
        elif messages is not None:
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str) for m in messages
            ):
                raise _invalid("'messages' must be an array of {role: user|assistant, content: string}.")
            turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        else:
            turns = []
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise _invalid("'variables' must be an object.")
        for name in ("session_id", "request_id", "user"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise _invalid(f"'{name}' must be a string.")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _invalid("'stream' must be a boolean.")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            raise _invalid("'max_tokens' must be a positive integer.")
        if not turns and body.get("input") is None:
            raise _invalid("Give 'message', 'messages' or 'input'.")
        mode = body.get("orchestration_mode")
        if mode is not None and mode not in ORCHESTRATION_MODES:
            raise _invalid("'orchestration_mode' must be one of 'classic', 'code' or 'auto'.")
        user = (body.get("user") or "").strip() or None
        return cls(turns, body.get("session_id"), variables, body.get("input"), bool(stream), body.get("request_id"), max_tokens, mode, user)


@dataclass(frozen=True)
class StreamedOutcome:
    """The end of a streamed endpoint run: its session, and the parsed output when there is a schema."""

    session_id: str | None
    output: Any = None


@dataclass(frozen=True)
class EndpointAnswer:
    body: JSON
    trace: JSON


@dataclass
class SessionHandle:
    id: str | None
    history: list[JSON]
    # Set by the request when it succeeded: what the session holds from now on.
    conversation: list[JSON] | None = None


@dataclass
class Prepared:
    """A request that passed every step up to the provider call."""

    ctx: RequestContext
    endpoint: EndpointConfig
    call: EndpointCall
    system: str | None
    new_messages: list[JSON]
    # The gateway's own callers (the WhatsApp worker) name sessions that may not exist yet.
    create_session: bool = False


def _estimate(value: Any) -> int:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return estimated_tokens(len(text)) + 1  # and one for the message around it


def _parse_output(content: str) -> Any:
    fenced = _FENCE.match(content)
    return orjson.loads(fenced.group(1) if fenced else content)


class EndpointService:
    """Endpoints of every organisation, and the pipeline that serves them."""

    def __init__(self, gateway: Gateway, registry: EndpointRegistry | None = None) -> None:
        self.gateway = gateway
        self.registry = registry or EndpointRegistry(gateway.engine, gateway.settings.organisations)
        self.owner = f"{uuid.uuid4().hex[:12]}"

    async def endpoint(self, organisation: OrganisationConfig, slug: str) -> EndpointConfig | None:
        return await self.registry.get(organisation, slug)

    # -- the steps up to the provider call ------------------------------------------------------

    async def prepare(
        self,
        *,
        key: KeyInfo | None,
        organisation_id: str,
        slug: str,
        body: Any,
        request_id: str,
        source: str = "endpoint",
        create_session: bool = False,
    ) -> Prepared:
        gateway = self.gateway
        organisation = gateway.organisation(organisation_id)
        if key is not None and key.organisation_id != organisation_id:
            raise EndpointError(403, "forbidden", f"This key does not belong to organisation '{organisation_id}'.")
        if organisation is None:
            raise EndpointError(404, "endpoint_not_found", f"Organisation '{organisation_id}' is not configured.")
        try:
            check_scope(key, ENDPOINT_DOOR.scope)
        except GatewayError as exc:
            raise EndpointError.from_gateway(exc) from None
        endpoint = await self.endpoint(organisation, slug)
        if endpoint is None or not endpoint.active:
            raise EndpointError(404, "endpoint_not_found", f"There is no active endpoint '{slug}' in organisation '{organisation_id}'.")
        if key is not None and not key.allows_model(endpoint.model):
            raise EndpointError(403, "insufficient_permissions", f"This key may not use model '{endpoint.model}' (endpoint '{slug}').")
        call = EndpointCall.parse(body)
        if call.stream and not endpoint.stream:
            raise EndpointError(422, "stream_not_allowed", f"Endpoint '{slug}' does not stream; call it without 'stream'.")
        if call.session_id is not None and not endpoint.sessions.enabled:
            raise EndpointError(422, "sessions_disabled", f"Endpoint '{slug}' keeps no sessions; leave out 'session_id'.")
        new_messages = list(call.messages)
        if call.input is not None:
            rendered = orjson.dumps(call.input).decode()
            if new_messages and new_messages[-1]["role"] == "user":
                new_messages[-1] = {"role": "user", "content": f"{new_messages[-1]['content']}\n\nInput:\n{rendered}"}
            else:
                new_messages.append({"role": "user", "content": rendered})
        cap = endpoint.max_tokens_per_request
        if cap is not None:
            needed = _estimate(endpoint.system_prompt or "") + sum(_estimate(m["content"]) for m in new_messages) + (call.max_tokens or 0)
            if needed > cap:
                raise EndpointError(
                    422, "token_cap_exceeded", f"The request needs about {needed} tokens; endpoint '{slug}' allows {cap} per request (max_tokens_per_request)."
                )
        plugins = None if endpoint.plugins is None else [PluginRequest(p, "plugins") for p in endpoint.plugins]
        try:
            ctx = await admit(
                gateway,
                ENDPOINT_DOOR.named(source),
                key=key,
                organisation_id=organisation_id,
                request_id=request_id,
                model=endpoint.model,
                plugins=plugins,
                guardrails=endpoint.guardrails,
                endpoint=slug,
                # billing: the call holds its most until it settles (runtime/limits/reservation.py); a
                # refusal below gives the hold back at once.
                body=body,
                prompt_parts=(endpoint.system_prompt or "",),
            )
            ctx.end_user = call.user
        except GatewayError as exc:
            if exc.code == "insufficient_credits":
                raise EndpointError(422, "budget_exceeded", exc.message) from None
            raise EndpointError.from_gateway(exc) from None
        try:
            return self._checked(ctx, endpoint, call, new_messages, create_session, slug=slug, request_id=request_id)
        except BaseException:
            # billing: refused after admission, before anything was spent: the holds go now.
            gateway.ledger.release(ctx)
            raise

    def _checked(
        self, ctx: RequestContext, endpoint: EndpointConfig, call: EndpointCall, new_messages: list[JSON], create_session: bool, *, slug: str, request_id: str
    ) -> Prepared:
        """The checks an admitted endpoint call passes before its prompt is built (guardrails, schema, variables)."""
        organisation = ctx.organisation
        guardrails = ctx.guardrails
        if guardrails is not None and guardrails.applies_to("input"):
            try:
                new_messages, findings = guardrails.check_messages(new_messages, "input")
            except GuardrailBlocked as blocked:
                self.gateway.record_guardrail_hits(
                    [("input", blocked.findings)], organisation_id=organisation.id, endpoint=slug, key_id=ctx.key_id, request_id=request_id
                )
                raise EndpointError.from_gateway(guardrail_blocked(blocked.guardrail_key, blocked.findings)) from None
            if findings:
                self.gateway.record_guardrail_hits([("input", findings)], organisation_id=organisation.id, endpoint=slug, key_id=ctx.key_id, request_id=request_id)
            # The caller's input is checked here, before the prompt; output and tool results in the loop.
            ctx.guard_input = False
        if endpoint.input_schema is not None:
            wrong = mismatch(validator_for(endpoint.input_schema), call.input)
            if wrong is not None:
                raise EndpointError(422, "input_schema", f"'input' does not match the endpoint's input_schema {wrong}")
        try:
            system = render(endpoint.system_prompt, call.variables) if endpoint.system_prompt else None
        except MissingVariable as exc:
            raise EndpointError(422, "missing_variable", str(exc)) from None
        return Prepared(ctx, endpoint, call, system, new_messages, create_session)

    # -- sessions -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self, prepared: Prepared) -> AsyncIterator[SessionHandle]:
        """The session, held (leased) for the whole request; saved on exit when ``conversation`` is set.

        A session that cannot be had (404, 409) refuses the call before it runs: its holds go now.
        """
        entered = False
        try:
            async with self._leased(prepared) as handle:
                entered = True
                yield handle
        except BaseException:
            if not entered:
                self.gateway.ledger.release(prepared.ctx)
            raise

    @contextlib.asynccontextmanager
    async def _leased(self, prepared: Prepared) -> AsyncIterator[SessionHandle]:
        endpoint, call, ctx = prepared.endpoint, prepared.call, prepared.ctx
        if not endpoint.sessions.enabled:
            yield SessionHandle(None, [])
            return
        engine = self.gateway.engine
        owner = f"{self.owner}:{secrets.token_hex(6)}"
        where = {"organisation_id": ctx.organisation.id, "endpoint": endpoint.slug}
        session_id = call.session_id
        if session_id is None:
            session_id = sessions.new_session_id()
            await anyio.to_thread.run_sync(
                partial(sessions.create, engine, session_id=session_id, ttl_hours=endpoint.sessions.ttl_hours, owner=owner, lease_s=SESSION_LEASE_S, **where)
            )
        else:
            if not await anyio.to_thread.run_sync(partial(sessions.exists, engine, session_id=session_id, **where)):
                if not prepared.create_session:
                    raise EndpointError(404, "session_not_found", f"There is no session {quoted(session_id)} for endpoint '{endpoint.slug}'.")
                with contextlib.suppress(IntegrityError):  # another worker created it a moment ago
                    await anyio.to_thread.run_sync(
                        partial(sessions.create, engine, session_id=session_id, ttl_hours=endpoint.sessions.ttl_hours, owner="", lease_s=-1.0, **where)
                    )
            waited = 0.0
            delay = 0.02
            while not await anyio.to_thread.run_sync(
                partial(sessions.try_lock, engine, session_id=session_id, owner=owner, lease_s=SESSION_LEASE_S, **where)
            ):
                if waited >= SESSION_WAIT_S:
                    raise EndpointError(409, "session_busy", f"Session {quoted(session_id)} is busy with another request.")
                if not await anyio.to_thread.run_sync(partial(sessions.exists, engine, session_id=session_id, **where)):
                    raise EndpointError(404, "session_not_found", f"There is no session {quoted(session_id)} for endpoint '{endpoint.slug}'.")
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.2)
        saved = False
        try:
            history = await anyio.to_thread.run_sync(partial(sessions.messages, engine, session_id=session_id))
            handle = SessionHandle(session_id, history)
            yield handle
            if handle.conversation is not None:
                await anyio.to_thread.run_sync(
                    partial(sessions.save, engine, session_id=session_id, owner=owner, conversation=handle.conversation, ttl_hours=endpoint.sessions.ttl_hours)
                )
                saved = True
        finally:
            if not saved:
                with contextlib.suppress(Exception):
                    await anyio.to_thread.run_sync(partial(sessions.release, engine, session_id=session_id, owner=owner))

    def _conversation(self, prepared: Prepared, history: list[JSON]) -> tuple[list[JSON], int | None]:
        """The messages for the model, and the max_tokens left under the endpoint's cap."""
        endpoint, call = prepared.endpoint, prepared.call
        limits = endpoint.sessions
        history = sessions.bounded(history, max_messages=limits.max_messages, max_chars=limits.max_chars) if history else []
        system = prepared.system
        output_schema = endpoint.output_schema
        if output_schema is not None and not self.gateway.router.supports_json_schema(prepared.ctx.model):
            instruction = f"Answer with one JSON value that matches this JSON Schema, and nothing else:\n{orjson.dumps(output_schema).decode()}"
            system = f"{system}\n\n{instruction}" if system else instruction
        head = [{"role": "system", "content": system}] if system else []
        max_tokens = call.max_tokens
        cap = endpoint.max_tokens_per_request
        if cap is not None:
            fixed = sum(_estimate(m["content"]) for m in head + prepared.new_messages)
            floor = min(256, cap // 4)
            while history and cap - fixed - sum(_estimate(m.get("content") or "") for m in history) < floor:
                history = sessions.bounded(history[1:], max_messages=len(history), max_chars=10**12)
            left = cap - fixed - sum(_estimate(m.get("content") or "") for m in history)
            max_tokens = max(1, min(max_tokens or left, left))
        return head + history + prepared.new_messages, max_tokens

    def _body(self, prepared: Prepared, messages: list[JSON], max_tokens: int | None) -> JSON:
        body: JSON = {"model": prepared.endpoint.model, "messages": messages}
        # The request's mode, else the endpoint's; without either the organisation's applies.
        mode = prepared.call.orchestration_mode or prepared.endpoint.orchestration.mode
        if mode is not None:
            body["orchestration_mode"] = mode
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        schema = prepared.endpoint.output_schema
        if schema is not None and self.gateway.router.supports_json_schema(prepared.ctx.model):
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": False}}
        return body

    def _check_output(self, prepared: Prepared, content: str) -> tuple[Any, str | None]:
        """The parsed output and None, or None and what is wrong with it."""
        schema = prepared.endpoint.output_schema
        assert schema is not None
        try:
            output = _parse_output(content)
        except orjson.JSONDecodeError as exc:
            return None, f"the answer is not JSON ({exc})"
        wrong = mismatch(validator_for(schema), output)
        return (None, wrong) if wrong is not None else (output, None)

    @staticmethod
    def _stored(messages: list[JSON], answer: JSON) -> list[JSON]:
        """What the session keeps: the conversation without system prompts, then the answer's turn."""
        return [m for m in messages if m.get("role") != "system"] + [answer]

    # -- non-streamed -----------------------------------------------------------------------------

    async def complete(self, prepared: Prepared) -> JSON:
        """The endpoint's JSON answer."""
        return (await self.answer(prepared)).body

    async def answer(self, prepared: Prepared) -> EndpointAnswer:
        """The JSON answer, and the orchestration trace behind it."""
        gateway, ctx = self.gateway, prepared.ctx
        async with self._session(prepared) as session:
            session_id = session.id
            messages, max_tokens = self._conversation(prepared, session.history)
            try:
                result = await gateway.run(ctx, RunRequest(self._body(prepared, messages, max_tokens)))
            except GatewayError as exc:
                raise EndpointError.from_gateway(exc) from None
            completed = result.completed
            trace = completed.trace
            usage = dict(completed.usage)
            content = str(completed.message.get("content") or "")
            answer: JSON = {"ok": True}
            if prepared.endpoint.output_schema is not None:
                output, problem = self._check_output(prepared, content)
                if problem is not None:
                    # One repair attempt: the model is told exactly what failed.
                    repair = [*completed.messages, {"role": "user", "content": f"That answer does not match the required JSON Schema: {problem}. Reply again with only the corrected JSON."}]
                    try:
                        again = await gateway.run(ctx, RunRequest({**self._body(prepared, repair, max_tokens)}))
                    except GatewayError as exc:
                        raise EndpointError.from_gateway(exc) from None
                    completed = again.completed
                    trace = _with_repair(trace, completed.trace)
                    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                        usage[name] = usage.get(name, 0) + completed.usage.get(name, 0)
                    content = str(completed.message.get("content") or "")
                    output, problem = self._check_output(prepared, content)
                    if problem is not None:
                        raise EndpointError(502, "output_schema", f"The model's answer does not match the endpoint's output_schema {problem}.")
                answer["output"] = output
            session.conversation = self._stored(result.completed.messages[:-1], _answer_turn(completed.message, content))
            answer.update(
                {
                    "id": f"epr_{uuid.uuid4().hex[:24]}",
                    "model": prepared.endpoint.model,
                    "content": content,
                    "finish_reason": completed.finish_reason,
                    "usage": {k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
                    "meta": {"request_id": ctx.request_id, "session_id": session_id},
                    "plugway": trace,  # as on chat completions: rounds, tool calls, provider
                }
            )
            return EndpointAnswer(answer, trace)

    # -- streamed -------------------------------------------------------------------------------

    async def events(self, prepared: Prepared) -> AsyncIterator[Event | KeepAlive | StreamedOutcome]:
        """The run's events as they happen (the session held throughout), then one StreamedOutcome.

        Errors after the first event arrive as an ``EndpointError`` raised here.
        """
        gateway, ctx = self.gateway, prepared.ctx
        async with self._session(prepared) as session:
            messages, max_tokens = self._conversation(prepared, session.history)
            completed: Completed | None = None
            try:
                async for event in gateway.stream(ctx, RunRequest(self._body(prepared, messages, max_tokens), stream=True)):
                    if isinstance(event, Completed):
                        completed = event
                    yield event
            except GatewayError as exc:
                raise EndpointError.from_gateway(exc) from None
            output = None
            if completed is not None and prepared.endpoint.output_schema is not None:
                output, problem = self._check_output(prepared, str(completed.message.get("content") or ""))
                if problem is not None:
                    raise EndpointError(502, "output_schema", f"The model's answer does not match the endpoint's output_schema {problem}.")
            if completed is not None:
                session.conversation = self._stored(completed.messages[:-1], _answer_turn(completed.message, completed.message.get("content") or ""))
            yield StreamedOutcome(session.id, output)

    async def stream(self, prepared: Prepared) -> AsyncIterator[bytes]:
        """OpenAI-style SSE chunks; the last data chunk carries usage, the trace and ``meta`` (and ``output``)."""
        encoder = ChatStreamEncoder(model_id=prepared.endpoint.model, include_usage=False)
        held: Completed | None = None
        try:
            async for event in self.events(prepared):
                if isinstance(event, KeepAlive):
                    yield sse.KEEP_ALIVE_COMMENT
                elif isinstance(event, Completed):
                    held = event  # its chunk goes out once the output is checked and the session saved
                elif isinstance(event, StreamedOutcome):
                    encoder.final_fields["meta"] = {"request_id": prepared.ctx.request_id, "session_id": event.session_id}
                    if event.output is not None:
                        encoder.final_fields["output"] = event.output
                    if held is not None:
                        yield encoder.encode(held) or b""
                else:
                    chunk = encoder.encode(event)
                    if chunk:
                        yield chunk
        except EndpointError as exc:
            yield sse.data(exc.body())
            return
        yield sse.DONE


def _with_repair(first: JSON, repair: JSON) -> JSON:
    """One trace for an answer and its repair attempt: the repair's, with both runs' rounds and tool calls."""
    return {
        **repair,
        "rounds": int(first.get("rounds") or 0) + int(repair.get("rounds") or 0),
        "tool_calls": [*(first.get("tool_calls") or []), *(repair.get("tool_calls") or [])],
        "output_repaired": True,
    }


def _answer_turn(message: JSON, content: str) -> JSON:
    """The final answer as the session keeps it: its text, and the model's reasoning state
    (runtime.reasoning) so that the next turn gives the model back its own parts."""
    turn: JSON = {"role": "assistant", "content": content}
    if message.get(REASONING_PARTS):
        turn[REASONING_PARTS] = message[REASONING_PARTS]
    return turn
