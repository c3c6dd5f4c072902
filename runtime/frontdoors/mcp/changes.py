"""Telling connected MCP clients that their organisation's tool list (or resources, or prompts) changed.

An organisation's tools change when a backing MCP server announces a new
list (the runtime's MCP connection refreshes it). Rather than depend on hooks
inside ``runtime/mcp``, one watcher task per organisation compares the
organisation's tool-list identity (public names, descriptions and schemas)
every ``poll_s`` and, on a change, tells every client of that organisation
that listens:

- 2026-07-28 clients listen with ``subscriptions/listen``: each organisation
  has its own subscription bus and listen handler, so a change in one
  organisation never reaches another's clients;
- 2025 (handshake) clients hold a session and receive
  ``notifications/tools/list_changed`` on its standalone GET stream. A session
  is remembered once it has listed tools (nothing to tell before that) and
  forgotten when the client deletes it, when the SDK answers 404 for it, or
  when it has been idle (no request, no open GET stream) for as long as the
  session manager keeps idle sessions.

The same watcher compares the organisation's MCP servers' resources (and
templates) and prompts, as ``/mcp`` names them, and announces
``resources/list_changed`` and ``prompts/list_changed`` the same way.

A watcher runs only while its organisation has a listener or a remembered
session, so organisations nobody is connected to cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)

from runtime.orchestration.tools import Toolset

log = logging.getLogger("plugway.mcp_server")

ToolsetOf = Callable[[str], Awaitable[Toolset | None]]
# An organisation's resources (and templates) and prompts, as what a client sees of them.
OfferingsOf = Callable[[str], Awaitable[tuple[Any, Any]]]
Identity = tuple[tuple[str, str, bytes], ...]


def toolset_identity(toolset: Toolset) -> Identity:
    """What a client sees of a tool list: a change here is worth a ``list_changed``."""
    return tuple(
        (name, bound.spec.description, orjson.dumps(bound.spec.parameters, option=orjson.OPT_SORT_KEYS))
        for name, bound in toolset.by_name.items()
    )


@dataclass
class _Session:
    """A handshake-era session that listed tools."""

    session: ServerSession
    last_active: float
    open_requests: int = 0


@dataclass
class _Organisation:
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    listen: ListenHandler = field(init=False)
    listeners: int = 0
    sessions: dict[str, _Session] = field(default_factory=dict)
    # The watcher's baseline: what clients were last told (or listed when it started).
    toolset: Toolset | None = None
    identity: Identity | None = None
    task: asyncio.Task[None] | None = None
    # The resources' and prompts' identities clients were last told of (None: not taken yet).
    offerings: tuple[Any, Any] | None = None
    # Whatever a handler resolved last, for synchronous schema look-ups; never the baseline,
    # or a call resolving a changed list would hide the change from the watcher.
    latest: Toolset | None = None

    def __post_init__(self) -> None:
        self.listen = ListenHandler(self.bus)

    @property
    def watched(self) -> bool:
        return self.listeners > 0 or bool(self.sessions)

    def baseline(self, toolset: Toolset) -> None:
        if toolset is not self.toolset:
            self.toolset = toolset
            self.identity = toolset_identity(toolset)


class ToolListChanges:
    """Watches organisations' tool lists for the clients connected to ``/mcp``."""

    def __init__(
        self,
        toolset_of: ToolsetOf,
        *,
        poll_s: float = 1.0,
        session_idle_s: float = 1800.0,
        offerings_of: OfferingsOf | None = None,
    ) -> None:
        self._toolset_of = toolset_of
        self._offerings_of = offerings_of
        self.poll_s = poll_s
        self.session_idle_s = session_idle_s
        self._organisations: dict[str, _Organisation] = {}
        self._session_organisation: dict[str, str] = {}
        self._closed = False

    def _organisation(self, organisation_id: str) -> _Organisation:
        state = self._organisations.get(organisation_id)
        if state is None:
            state = self._organisations[organisation_id] = _Organisation()
        return state

    def status(self) -> dict[str, dict[str, int | bool]]:
        """Per organisation: open listen streams, remembered sessions, whether a watcher runs."""
        return {
            organisation_id: {
                "listeners": state.listeners,
                "sessions": len(state.sessions),
                "watching": state.task is not None and not state.task.done(),
            }
            for organisation_id, state in self._organisations.items()
        }

    def latest(self, organisation_id: str) -> Toolset | None:
        """The organisation's tool list as last listed or watched (None when nobody looked yet)."""
        state = self._organisations.get(organisation_id)
        return state.latest if state is not None else None

    def seen(self, organisation_id: str, toolset: Toolset) -> None:
        """A handler resolved the organisation's tools."""
        self._organisation(organisation_id).latest = toolset

    # -- 2025 sessions ----------------------------------------------------------------

    def session_listed(self, session_id: str, organisation_id: str, session: ServerSession, toolset: Toolset) -> None:
        """A handshake-era session listed the tools: tell it when they change."""
        state = self._organisation(organisation_id)
        known = state.sessions.get(session_id)
        if known is None:
            state.sessions[session_id] = _Session(session, time.monotonic())
            self._session_organisation[session_id] = organisation_id
        else:
            known.session = session
        self._watch(organisation_id, state, toolset)

    def request_started(self, session_id: str) -> None:
        session = self._session(session_id)
        if session is not None:
            session.open_requests += 1
            session.last_active = time.monotonic()

    def request_finished(self, session_id: str, *, session_gone: bool) -> None:
        """An HTTP request of a session ended; ``session_gone`` when it deleted the session or it was unknown."""
        session = self._session(session_id)
        if session is not None:
            session.open_requests = max(0, session.open_requests - 1)
            session.last_active = time.monotonic()
        if session_gone:
            self.forget_session(session_id)

    def forget_session(self, session_id: str) -> None:
        organisation_id = self._session_organisation.pop(session_id, None)
        if organisation_id is not None:
            self._organisations[organisation_id].sessions.pop(session_id, None)

    def _session(self, session_id: str) -> _Session | None:
        organisation_id = self._session_organisation.get(session_id)
        if organisation_id is None:
            return None
        return self._organisations[organisation_id].sessions.get(session_id)

    def _expire_idle_sessions(self, state: _Organisation) -> None:
        # The session manager reaps a session idle this long; its id answers 404 from then on.
        cutoff = time.monotonic() - self.session_idle_s
        for session_id, session in list(state.sessions.items()):
            if session.open_requests == 0 and session.last_active < cutoff:
                self.forget_session(session_id)

    # -- 2026-07-28 listeners ---------------------------------------------------------

    def listen_handler(self, organisation_id: str) -> ListenHandler:
        return self._organisation(organisation_id).listen

    def bus(self, organisation_id: str) -> InMemorySubscriptionBus:
        """What the organisation's listen streams read (a Redis-backed bus would fan out across processes)."""
        return self._organisation(organisation_id).bus

    @contextlib.contextmanager
    def listening(self, organisation_id: str, toolset: Toolset) -> Iterator[None]:
        """Hold the organisation's watcher running while a ``subscriptions/listen`` stream is open."""
        state = self._organisation(organisation_id)
        state.listeners += 1
        self._watch(organisation_id, state, toolset)
        try:
            yield
        finally:
            state.listeners -= 1

    # -- the watcher ------------------------------------------------------------------

    def _watch(self, organisation_id: str, state: _Organisation, toolset: Toolset) -> None:
        if state.task is None or state.task.done():
            # The baseline is the list the client just saw: a change after it must be told.
            state.baseline(toolset)
            if not self._closed:
                state.task = asyncio.get_running_loop().create_task(
                    self._run(organisation_id, state), name=f"mcp-tool-list-watch:{organisation_id}"
                )

    async def _run(self, organisation_id: str, state: _Organisation) -> None:
        while state.watched:
            await asyncio.sleep(self.poll_s)
            try:
                await self._check(organisation_id, state)
            except Exception:
                # One bad look (an MCP server mid-restart, say) must not end the watching.
                log.warning("could not check organisation %s's tool list", organisation_id, exc_info=True)

    async def baseline_offerings(self, organisation_id: str) -> None:
        """Take the organisation's resources and prompts as clients see them now, if nobody has yet."""
        state = self._organisation(organisation_id)
        if self._offerings_of is not None and state.offerings is None:
            state.offerings = await self._offerings_of(organisation_id)

    async def _check_offerings(self, organisation_id: str, state: _Organisation) -> None:
        if self._offerings_of is None:
            return
        current = await self._offerings_of(organisation_id)
        before, state.offerings = state.offerings, current
        if before is None or before == current:
            return
        resources, prompts = current[0] != before[0], current[1] != before[1]
        log.info("organisation %s's resources or prompts changed: telling its listeners", organisation_id)
        if resources:
            await state.bus.publish(ResourcesListChanged())
        if prompts:
            await state.bus.publish(PromptsListChanged())
        for session_id, session in list(state.sessions.items()):
            try:
                if resources:
                    await session.session.send_resource_list_changed()
                if prompts:
                    await session.session.send_prompt_list_changed()
            except Exception as exc:
                log.debug("session %s no longer reachable (%s): forgotten", session_id, exc)
                self.forget_session(session_id)

    async def _check(self, organisation_id: str, state: _Organisation) -> None:
        self._expire_idle_sessions(state)
        await self._check_offerings(organisation_id, state)
        toolset = await self._toolset_of(organisation_id)
        if toolset is None or toolset is state.toolset:
            return
        state.latest = toolset
        before = state.identity
        state.baseline(toolset)
        if state.identity != before:
            await self._announce(organisation_id, state)

    async def _announce(self, organisation_id: str, state: _Organisation) -> None:
        log.info("organisation %s's tool list changed: telling %d listener(s) and %d session(s)",
                 organisation_id, state.listeners, len(state.sessions))
        await state.bus.publish(ToolsListChanged())
        for session_id, session in list(state.sessions.items()):
            try:
                await session.session.send_tool_list_changed()
            except Exception as exc:
                # Its stream is gone: the session ended without telling us.
                log.debug("session %s no longer reachable (%s): forgotten", session_id, exc)
                self.forget_session(session_id)

    async def aclose(self) -> None:
        """Stop every watcher and end every listen stream gracefully."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = []
        for state in self._organisations.values():
            state.listen.close()
            if state.task is not None:
                state.task.cancel()
                tasks.append(state.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._organisations.clear()
        self._session_organisation.clear()
