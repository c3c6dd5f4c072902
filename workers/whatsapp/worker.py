"""The WhatsApp reply worker: claim stored inbound messages, answer them, send the replies.

Any number of workers, in-process under ``plugway serve`` or as ``plugway
worker`` processes on several machines, share the queue in the database. Each
holds a lease on what it works on and renews it while the model thinks; a worker
that dies leaves its lease to expire and another worker picks the message up.
Each conversation is answered in order, one message at a time; different
conversations run in parallel, up to ``worker_concurrency`` per worker.

A reply, once produced, is stored before it is sent, and each accepted part is
recorded: a retry resumes sending where it stopped and never calls the model
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine

from runtime.config import Settings, WhatsAppAppConfig
from runtime.errors import GatewayError
from runtime.telemetry import current as telemetry
from workers.whatsapp.graph import GraphClient, GraphError
from workers.whatsapp.models import InboundStatus
from workers.whatsapp.payloads import intent_for
from workers.whatsapp.splitting import WHATSAPP_TEXT_LIMIT, split_text
from workers.whatsapp.store import ClaimedMessage, InboundStore

log = logging.getLogger("plugway.whatsapp")
# Sent instead of an answer when the endpoint's guardrails block the customer's message.
GUARDRAIL_REPLY = "Sorry, I can't help with that message. Please leave out personal or sensitive details and ask again."


class CompletionGateway(Protocol):
    """What the worker needs from ``runtime.gateway.Gateway``."""

    settings: Settings
    engine: Engine

    async def complete(
        self,
        *,
        organisation_id: str,
        model: str,
        messages: list[dict[str, Any]],
        plugin_ids: Sequence[str] | None,
        request_id: str,
        source: str = "api",
        end_user: str | None = None,
    ) -> Any: ...


def whatsapp_user(sender: str) -> str:
    """The end user a WhatsApp contact is, for MCP servers authorized per end user."""
    return f"whatsapp:{sender}"


# A profile name is the customer's own text and lands in a system prompt: one line, briefly.
CONTACT_NAME_CHARS = 80


def prompt_safe_name(name: str | None) -> str:
    """A WhatsApp profile name fit for a system prompt: control characters and line breaks
    collapsed to single spaces, at most ``CONTACT_NAME_CHARS`` characters."""
    if not name:
        return ""
    printable = "".join(ch if ch.isprintable() else " " for ch in name)
    return " ".join(printable.split())[:CONTACT_NAME_CHARS].strip()


class _LeaseLost(Exception):
    """Another worker took the message over (our lease expired): stop touching it."""


class WhatsAppWorker:
    def __init__(
        self,
        gateway: CompletionGateway,
        *,
        settings: Settings | None = None,
        owner: str | None = None,
        retry_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        graph_timeout_s: float = 20.0,
        typing_refresh_s: float = 20.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.gateway = gateway
        self.settings = settings or gateway.settings
        self.config = self.settings.whatsapp
        self.apps: dict[str, WhatsAppAppConfig] = {app.id: app for app in self.config.apps}
        self.store = InboundStore(gateway.engine)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.typing_refresh_s = typing_refresh_s
        self.stop_grace_s = stop_grace_s
        self._graph_timeout_s = graph_timeout_s
        self._graph: GraphClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._endpoints: Any = None  # the endpoint pipeline, for apps that name an endpoint

    @property
    def graph(self) -> GraphClient:
        if self._graph is None:
            self._graph = GraphClient(self.config.graph_api_base, timeout_s=self._graph_timeout_s)
        return self._graph

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._dispatcher is not None:
            return
        self._stopping = False
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="whatsapp-dispatcher")
        log.info("whatsapp worker %s started (%d apps)", self.owner, len(self.apps))

    async def stop(self) -> None:
        """Stop claiming; let in-flight messages finish for ``stop_grace_s``, then release them."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            await self._dispatcher
            self._dispatcher = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.stop_grace_s)
            for task in pending:
                task.cancel()  # _handle releases the lease on cancellation
            if pending:
                await asyncio.wait(pending)
        if self._graph is not None:
            await self._graph.aclose()
            self._graph = None

    aclose = stop

    def notify(self) -> None:
        """New messages were stored: look now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim what can be claimed now (up to ``worker_concurrency``), answer it, return the count."""
        claimed = await anyio.to_thread.run_sync(self._claim, self.config.worker_concurrency)
        await asyncio.gather(*(self._handle(message) for message in claimed))
        return len(claimed)

    async def run_until_idle(self, *, timeout_s: float = 30.0) -> int:
        """Repeat :meth:`run_once` until nothing is claimable (tests, ``simulate`` demos)."""
        total = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            handled = await self.run_once()
            if handled == 0:
                return total
            total += handled
        return total

    def _claim(self, limit: int) -> list[ClaimedMessage]:
        return self.store.claim(owner=self.owner, lease_s=self.config.lease_s, limit=limit)

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            free = self.config.worker_concurrency - len(self._inflight)
            claimed: list[ClaimedMessage] = []
            if free > 0:
                try:
                    claimed = await anyio.to_thread.run_sync(self._claim, free)
                except Exception:
                    log.exception("whatsapp worker: claiming failed; retrying")
                for message in claimed:
                    task = asyncio.create_task(self._handle(message), name=f"whatsapp-{message.id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == free:
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval_s)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a finished message may unblock the next one of its conversation

    # --- one message -------------------------------------------------------

    async def _handle(self, message: ClaimedMessage) -> None:
        lease = _Lease(self, message)
        heartbeat = asyncio.create_task(lease.keep_alive())
        try:
            async with telemetry().whatsapp_processing(message.app_id, message.id, message.wamid, message.attempts, message.raw):
                await self._answer(message, lease)
        except _LeaseLost:
            log.warning("whatsapp #%s: lease lost to another worker; leaving it", message.id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self.store.release, message.id, self.owner)
            raise
        except GraphError as exc:
            await self._failed_attempt(message, exc.describe(), retryable=exc.retryable)
        except GatewayError as exc:
            retryable = exc.status >= 500 or exc.status in (402, 408, 429)
            await self._failed_attempt(message, f"model: {exc.code}: {exc.message}", retryable=retryable)
        except Exception as exc:
            log.exception("whatsapp #%s: unexpected error", message.id)
            await self._failed_attempt(message, f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _answer(self, message: ClaimedMessage, lease: _Lease) -> None:
        app = self.apps.get(message.app_id)
        if app is None:
            await self._finish(message, InboundStatus.failed, error=f"unknown app '{message.app_id}'")
            return
        if message.message_ts < time.time() - self.config.max_message_age_s:
            # A late redelivery (or a long outage): an answer now would be out of context.
            await self._finish(message, InboundStatus.stale)
            return
        reply = message.reply_text
        if reply is None:
            intent = intent_for(message.raw)
            if intent.action == "none" or not intent.text:
                await self._finish(message, InboundStatus.ignored)
                return
            trace: dict[str, Any] | None = None
            if intent.action == "canned":
                reply, in_history = intent.text, False
            else:
                (reply, trace), in_history = await self._generate(app, message, lease), True
                if not reply.strip():
                    await self._finish(
                        message, InboundStatus.ignored, error="the model returned an empty answer"
                    )
                    return
            lease.check()
            saved = await anyio.to_thread.run_sync(
                lambda: self.store.save_reply(message.id, self.owner, reply, in_history=in_history, trace=trace)
            )
            if not saved:
                raise _LeaseLost
        parts = split_text(reply, WHATSAPP_TEXT_LIMIT)
        already_sent = await anyio.to_thread.run_sync(self.store.sent_parts, message.id)
        for index in range(already_sent, len(parts)):
            lease.check()
            with telemetry().span("send whatsapp", kind=SpanKind.CLIENT, attributes={"plugway.whatsapp.app_id": app.id, "plugway.whatsapp.part": index}):
                wamid = await self.graph.send_text(
                    app,
                    to=message.sender,
                    body=parts[index],
                    reply_to=message.wamid if index == 0 else None,
                )
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.store.record_outbound,
                    app_id=app.id,
                    inbound_id=message.id,
                    part_index=index,
                    wamid=wamid,
                    recipient=message.sender,
                    body=parts[index],
                )
            )
        await self._finish(message, InboundStatus.answered)

    async def _generate(self, app: WhatsAppAppConfig, message: ClaimedMessage, lease: _Lease) -> tuple[str, dict[str, Any] | None]:
        """The reply, and the orchestration trace that produced it."""
        lease.typing = True
        await lease.show_typing(app)
        request_id = f"wa-{message.id}-{message.attempts}"
        try:
            if app.endpoint is not None:
                return await self._through_endpoint(app, app.endpoint, message, request_id)
            assert app.model is not None
            messages = await self._conversation(app, message)
            result = await self.gateway.complete(
                organisation_id=app.organisation,
                model=app.model,
                messages=messages,
                plugin_ids=list(app.enabled_plugin_ids),
                request_id=request_id,
                source="whatsapp",
                end_user=whatsapp_user(message.sender),
            )
        finally:
            lease.typing = False
        return str(result.text or ""), result.completed.trace

    async def _through_endpoint(self, app: WhatsAppAppConfig, slug: str, message: ClaimedMessage, request_id: str) -> tuple[str, dict[str, Any] | None]:
        """Answer with the app's endpoint: its model, prompt, plugins, guardrails, and its sessions as memory."""
        from runtime.endpoints import EndpointError, EndpointService
        from runtime.endpoints.sessions import whatsapp_session_id

        if self._endpoints is None:
            self._endpoints = EndpointService(self.gateway)  # type: ignore[arg-type]
        service = self._endpoints
        organisation = self.gateway.organisation(app.organisation)  # type: ignore[attr-defined]
        endpoint = await service.endpoint(organisation, slug) if organisation is not None else None
        body: dict[str, Any] = {"message": message.text or ""}
        if endpoint is not None and endpoint.sessions.enabled:
            body["session_id"] = whatsapp_session_id(app.id, message.sender)
        else:
            # No sessions on the endpoint: the conversation memory comes from the queue, as without one.
            history = await self._conversation(app, message)
            body = {"messages": [m for m in history if m["role"] in ("user", "assistant")]}
        # The contact is the end user: MCP servers authorized per end user run as them.
        body["user"] = whatsapp_user(message.sender)
        body["variables"] = {
            "contact_name": prompt_safe_name(message.sender_name) or message.sender,
            "contact_phone": message.sender,
            **app.variables,
        }
        try:
            prepared = await service.prepare(
                key=None, organisation_id=app.organisation, slug=slug, body=body, request_id=request_id, source="whatsapp", create_session=True
            )
            answer = await service.answer(prepared)
        except EndpointError as exc:
            if exc.code == "guardrail_block":
                return GUARDRAIL_REPLY, None
            raise GatewayError(exc.status if exc.status >= 500 else 400, exc.message, code=exc.code) from None
        output = answer.body.get("output")
        if app.reply_field is not None and isinstance(output, dict) and isinstance(output.get(app.reply_field), str):
            return output[app.reply_field], answer.trace
        return str(answer.body.get("content") or ""), answer.trace

    async def _conversation(self, app: WhatsAppAppConfig, message: ClaimedMessage) -> list[dict[str, Any]]:
        """System prompt, then the recent turns within the count and character bounds, then this message."""
        limit = self.config.history_messages
        pairs = await anyio.to_thread.run_sync(
            lambda: self.store.history(message, max_turns=math.ceil(limit / 2))
        )
        history: list[dict[str, Any]] = []
        for text, reply in pairs:
            history.append({"role": "user", "content": text})
            history.append({"role": "assistant", "content": reply})
        history = history[-limit:] if limit else []
        budget = self.config.history_chars
        while history and sum(len(m["content"]) for m in history) > budget:
            history.pop(0)
        while history and history[0]["role"] != "user":
            history.pop(0)  # never open on a reply whose question was cut
        messages: list[dict[str, Any]] = []
        if app.system_prompt:
            messages.append({"role": "system", "content": app.system_prompt})
        messages.extend(history)
        messages.append({"role": "user", "content": message.text or ""})
        return messages

    async def _finish(self, message: ClaimedMessage, status: str, *, error: str | None = None) -> None:
        done = await anyio.to_thread.run_sync(
            lambda: self.store.finish(message.id, self.owner, status, error=error)
        )
        if not done:
            raise _LeaseLost
        telemetry().whatsapp_outcome(message.app_id, status)
        log.info("whatsapp #%s %s: %s", message.id, message.wamid, status)

    async def _failed_attempt(self, message: ClaimedMessage, error: str, *, retryable: bool) -> None:
        if retryable and message.attempts < self.config.max_send_attempts:
            delay = self.backoff_s(message.attempts)
            log.warning(
                "whatsapp #%s attempt %d failed (%s); retrying in %.1fs",
                message.id, message.attempts, error, delay,
            )
            await anyio.to_thread.run_sync(
                lambda: self.store.retry_later(message.id, self.owner, delay_s=delay, error=error)
            )
            telemetry().whatsapp_outcome(message.app_id, "retried")
            return
        reason = error if not retryable else f"{error} (gave up after {message.attempts} attempts)"
        log.error("whatsapp #%s failed: %s", message.id, reason)
        telemetry().whatsapp_outcome(message.app_id, InboundStatus.failed)
        await anyio.to_thread.run_sync(
            lambda: self.store.finish(message.id, self.owner, InboundStatus.failed, error=reason)
        )

    def backoff_s(self, attempts: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), capped, times 0.5-1.0."""
        delay = min(self.max_backoff_s, self.retry_backoff_s * 2 ** max(attempts - 1, 0))
        return delay * (0.5 + random.random() / 2)


class _Lease:
    """Renews a message's lease while it is being answered, and keeps the typing bubble up."""

    def __init__(self, worker: WhatsAppWorker, message: ClaimedMessage) -> None:
        self.worker = worker
        self.message = message
        self.lost = False
        self.typing = False
        self._last_typing = 0.0

    def check(self) -> None:
        if self.lost:
            raise _LeaseLost

    async def show_typing(self, app: WhatsAppAppConfig) -> None:
        self._last_typing = time.monotonic()
        try:
            await self.worker.graph.mark_read(app, self.message.wamid, typing=True)
        except GraphError as exc:  # cosmetic: never a reason to fail the answer
            log.info("whatsapp #%s: mark-read failed: %s", self.message.id, exc.describe())

    async def keep_alive(self) -> None:
        lease_s = self.worker.config.lease_s
        interval = max(lease_s / 3, 0.05)
        app = self.worker.apps.get(self.message.app_id)
        while True:
            await asyncio.sleep(min(interval, self.worker.typing_refresh_s))
            renewed = await anyio.to_thread.run_sync(
                lambda: self.worker.store.renew(self.message.id, self.worker.owner, lease_s=lease_s)
            )
            if not renewed:
                self.lost = True
                return
            if (
                self.typing
                and app is not None
                and time.monotonic() - self._last_typing >= self.worker.typing_refresh_s
            ):
                await self.show_typing(app)
