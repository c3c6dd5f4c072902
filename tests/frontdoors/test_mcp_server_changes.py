"""The /mcp tool-list watcher on its own: when it announces, whom it forgets, when it stops.

The end-to-end tests (``test_mcp_server.py``) show a change reaching real
clients; these pin the timing rules that would take half an hour there (the
session idle timeout) and the announcements that must not happen.
"""

from __future__ import annotations

import asyncio

import pytest

from runtime.config import PluginRef
from runtime.frontdoors.mcp.changes import ToolListChanges
from runtime.orchestration.naming import public_name
from runtime.orchestration.tools import BoundTool, Toolset
from runtime.plugin_host.tool import tool_from_function
from runtime.request import PluginGrant
from tests.mcp.mcp_helpers import eventually


def lookup(city: str) -> str:
    """Look a city up."""
    return city


def lookup_v2(city: str, country: str = "") -> str:
    """Look a city up."""
    return city


def toolset(*functions: object) -> Toolset:
    ref = PluginRef(id="geo")
    built = Toolset()
    for function in functions:
        spec = tool_from_function("geo", function, name="lookup")  # type: ignore[arg-type]
        built.add(BoundTool(public_name("geo", spec.name), spec, ref, None, PluginGrant(ref)))
    return built


class Session:
    """Stands in for the SDK's ServerSession: counts what it was told."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.told = 0
        self.reachable = reachable

    async def send_tool_list_changed(self) -> None:
        if not self.reachable:
            raise ConnectionResetError("stream gone")
        self.told += 1


@pytest.fixture
def current() -> dict[str, Toolset]:
    return {"acme": toolset(lookup)}


@pytest.fixture
async def changes(current: dict[str, Toolset]) -> ToolListChanges:
    async def toolset_of(organisation_id: str) -> Toolset | None:
        return current.get(organisation_id)

    watcher = ToolListChanges(toolset_of, poll_s=0.02, session_idle_s=0.3)
    yield watcher  # type: ignore[misc]
    await watcher.aclose()


async def test_only_a_change_clients_can_see_is_announced(changes: ToolListChanges, current: dict[str, Toolset]) -> None:
    session = Session()
    changes.session_listed("s1", "acme", session, current["acme"])  # type: ignore[arg-type]
    current["acme"] = toolset(lookup)  # rebuilt (an MCP reconnect), same names and schemas
    await asyncio.sleep(0.2)
    assert session.told == 0
    current["acme"] = toolset(lookup_v2)  # the schema changed
    await eventually(lambda: session.told == 1)
    await asyncio.sleep(0.1)
    assert session.told == 1


async def test_a_change_before_the_watcher_looks_is_not_lost_to_a_call_resolving_it_first(
    changes: ToolListChanges, current: dict[str, Toolset]
) -> None:
    session = Session()
    changes.session_listed("s1", "acme", session, current["acme"])  # type: ignore[arg-type]
    current["acme"] = toolset(lookup_v2)
    changes.seen("acme", current["acme"])  # a tools/call resolved the new list first
    assert changes.latest("acme") is current["acme"]
    await eventually(lambda: session.told == 1)


async def test_sessions_are_forgotten_when_deleted_idle_or_unreachable(changes: ToolListChanges, current: dict[str, Toolset]) -> None:
    streaming, idle, deleted, broken = Session(), Session(), Session(), Session(reachable=False)
    for session_id, session in {"streaming": streaming, "idle": idle, "deleted": deleted, "broken": broken}.items():
        changes.session_listed(session_id, "acme", session, current["acme"])  # type: ignore[arg-type]
    changes.request_started("streaming")  # its GET stream stays open
    changes.request_started("broken")  # so does this one, as far as the endpoint knows
    changes.request_started("deleted")
    changes.request_finished("deleted", session_gone=True)
    assert changes.status()["acme"]["sessions"] == 3

    await asyncio.sleep(0.5)  # longer than the idle timeout
    assert changes.status()["acme"]["sessions"] == 2  # "idle" expired; the streaming ones are busy
    current["acme"] = toolset(lookup_v2)
    await eventually(lambda: streaming.told == 1)
    assert idle.told == deleted.told == 0
    assert changes.status()["acme"] == {"listeners": 0, "sessions": 1, "watching": True}  # "broken" forgotten

    changes.request_finished("streaming", session_gone=False)
    await eventually(lambda: changes.status()["acme"] == {"listeners": 0, "sessions": 0, "watching": False})


async def test_listeners_keep_the_watcher_running_and_hear_the_change(changes: ToolListChanges, current: dict[str, Toolset]) -> None:
    heard: list[object] = []
    unsubscribe = changes.bus("acme").subscribe(heard.append)
    with changes.listening("acme", current["acme"]):
        assert changes.status()["acme"]["watching"]
        current["acme"] = toolset(lookup_v2)
        await eventually(lambda: len(heard) == 1)
    unsubscribe()
    await eventually(lambda: not changes.status()["acme"]["watching"])
    assert type(heard[0]).__name__ == "ToolsListChanged"
