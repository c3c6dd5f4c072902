"""Kills the gateway's MCP server process groups when the gateway dies, however it dies.

It runs as a small process of its own, in its own session, started by the first
stdio MCP server of a gateway process (see :mod:`runtime.mcp.process`). Its stdin
is a pipe from the gateway, on which the gateway writes ``+<pgid>`` when it
starts a server's process group and ``-<pgid>`` once it has reaped one. The
kernel closes that pipe whenever the gateway exits, SIGKILL and the OOM killer
included; at end of input the reaper sends SIGTERM to every group still
registered, waits up to two seconds, sends SIGKILL to what is left, and exits.
A gateway that stopped cleanly has reaped its servers already, so the reaper
then finds nothing to do.

A server that ignores stdin EOF, and the children it started in its group, die
with the gateway this way. (A grandchild that calls ``setsid`` leaves the group
and is out of reach, as with any process-group reaping.)

Standard library only: it runs as ``python -S -E <this file>`` and must import
nothing from plugway.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 2.0
_POLL_S = 0.05


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Killed orphans stay zombies until init reaps them: a group of zombies is dead.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_groups(groups: set[int], signum: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def reap(groups: set[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, then SIGKILL whatever is still alive after ``grace_s``."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = set(groups)
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        alive = {pgid for pgid in alive if _group_alive(pgid)}
    _signal_groups(alive, signal.SIGKILL)


def main() -> None:
    # A Ctrl-C meant for the gateway must not stop the one process that cleans up after it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line.startswith(b"+"):
            groups.add(pgid)
        elif line.startswith(b"-"):
            groups.discard(pgid)
    if groups:
        reap(groups)


if __name__ == "__main__":
    main()
