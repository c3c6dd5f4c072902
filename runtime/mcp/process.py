"""The stdio transport for MCP servers that run as child processes of the gateway.

The SDK's ``stdio_client`` does the same job but keeps the process to itself;
the gateway needs its pid (health, ``plugins list``), the tail of its stderr
(why did it die?), a prompt signal when it exits, and a registry of live
process groups so nothing is orphaned however the gateway stops. Framing and
the shutdown order follow the SDK: newline-delimited JSON-RPC; on close, stdin
is shut, the server gets a grace period, then its whole process group is sent
SIGTERM and finally SIGKILL.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
import anyio.abc
import anyio.streams.memory
import anyio.to_thread
import mcp_types
from anyio.streams.text import TextReceiveStream
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

logger = logging.getLogger("plugway.mcp.process")

# Beyond the SDK's allow-list (HOME, LOGNAME, PATH, SHELL, TERM, USER): locale and
# temp-dir settings change how a server behaves but carry no secrets.
_EXTRA_SAFE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

_STDERR_TAIL_LINES = 20
_POLL_S = 0.01

# Process groups of every child still alive, for last-resort reaping at exit.
_live_groups: set[int] = set()


def safe_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a server child gets: a safe inherited base plus its configured ``env``.

    The gateway's own secrets (provider keys, database URLs) never reach a child
    unless the configuration passes them explicitly.
    """
    env = get_default_environment()
    for key in _EXTRA_SAFE_ENV:
        value = os.environ.get(key)
        if value is not None:
            env[key] = value
    env.update(extra or {})
    return env


def kill_all_process_groups() -> int:
    """SIGKILL every live child process group; returns how many were signalled.

    For emergency paths only (a signal handler, interpreter exit); the normal
    path is :meth:`McpManager.aclose`, which stops servers gracefully.
    """
    killed = 0
    for pgid in list(_live_groups):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
        _live_groups.discard(pgid)
    return killed


# Runs when the interpreter exits without the manager having been closed (an
# unhandled exception in the CLI, a test runner tearing down a loop): children
# must not outlive the gateway.
atexit.register(kill_all_process_groups)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Killed orphans stay zombies until init reaps them, and a container's PID 1
    # may never do so: a group of zombies is dead for our purposes.
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _wait_exit(process: anyio.abc.Process, within_s: float) -> bool:
    # Polling returncode rather than process.wait(): on asyncio, wait() also waits
    # for pipe EOF, which a grandchild holding the pipe would delay forever.
    with anyio.move_on_after(within_s):
        while process.returncode is None:  # noqa: ASYNC110
            await anyio.sleep(_POLL_S)
    return process.returncode is not None


async def _wait_group_gone(pgid: int, within_s: float) -> bool:
    # Nothing signals the death of a whole process group: polling is the only way.
    # The /proc scan is file I/O: keep it off the event loop.
    with anyio.move_on_after(within_s):
        while await anyio.to_thread.run_sync(_group_alive, pgid):  # noqa: ASYNC110
            await anyio.sleep(_POLL_S * 5)
    return not await anyio.to_thread.run_sync(_group_alive, pgid)


class ChildProcessTransport:
    """Spawns one MCP server process and bridges its stdio to SDK session streams.

    ``open()`` is the async context manager handed to :class:`mcp.Client`; it
    must be entered and exited in the same task (it holds a task group).
    ``on_exit`` is called once, with a readable reason, when the process ends
    on its own (not when we stop it).
    """

    def __init__(
        self,
        command: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        label: str = "mcp",
        stop_grace_s: float = 2.0,
        term_grace_s: float = 1.0,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        if not command:
            raise ValueError("empty command")
        self.command = list(command)
        self.env = safe_environment(env)
        self.cwd = cwd
        self.label = label
        self.stop_grace_s = stop_grace_s
        self.term_grace_s = term_grace_s
        self.on_exit = on_exit
        self.pid: int | None = None
        self.returncode: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self.exited = anyio.Event()  # set once the process is known to have ended
        self._stderr_done = anyio.Event()
        self._stopping = False

    def exit_reason(self) -> str:
        code = self.returncode
        if code is None:
            reason = "server process closed its output"
        elif code < 0:
            reason = f"server process was killed by signal {-code}"
        else:
            reason = f"server process exited with code {code}"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), None)
        return f"{reason} (last stderr line: {last.strip()[:300]})" if last else reason

    @asynccontextmanager
    async def open(
        self,
    ) -> AsyncIterator[
        tuple[
            anyio.streams.memory.MemoryObjectReceiveStream[SessionMessage | Exception],
            anyio.streams.memory.MemoryObjectSendStream[SessionMessage],
        ]
    ]:
        process = await anyio.open_process(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Own session = own process group: the whole tree can be killed at once,
            # and a Ctrl-C meant for the gateway does not hit the servers first.
            start_new_session=True,
        )
        self.pid = process.pid
        _live_groups.add(process.pid)
        read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
        log = logging.getLogger(f"plugway.mcp.server.{self.label}")

        async def read_stdout() -> None:
            assert process.stdout is not None
            buffer = ""
            async with read_writer:
                try:
                    async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                        lines = (buffer + chunk).split("\n")
                        buffer = lines.pop()
                        for line in lines:
                            if not line.strip():
                                continue
                            try:
                                message: SessionMessage | Exception = SessionMessage(
                                    mcp_types.jsonrpc_message_adapter.validate_json(
                                        line, by_name=False
                                    )
                                )
                            except ValueError as exc:
                                # A server printing to stdout breaks the protocol; say so, carry on.
                                log.warning("non-JSON-RPC line on stdout: %.200s", line)
                                message = exc
                            await read_writer.send(message)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    pass
            if not self._stopping:
                await _wait_exit(process, 0.5)
                # The last stderr lines usually say why it died; let them arrive.
                with anyio.move_on_after(0.5):
                    await self._stderr_done.wait()
                self.returncode = process.returncode
                self.exited.set()
                if self.on_exit is not None:
                    self.on_exit(self.exit_reason())

        async def read_stderr() -> None:
            assert process.stderr is not None
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                buffer = ""
                async for chunk in TextReceiveStream(process.stderr, errors="replace"):
                    lines = (buffer + chunk).split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        self.stderr_tail.append(line)
                        log.debug("%s", line)
                if buffer:
                    self.stderr_tail.append(buffer)
            self._stderr_done.set()

        async def write_stdin() -> None:
            assert process.stdin is not None
            try:
                async with write_reader:
                    async for session_message in write_reader:
                        data = session_message.message.model_dump_json(
                            by_alias=True, exclude_unset=True
                        )
                        await process.stdin.send((data + "\n").encode())
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                # The server is gone: closing the read side makes pending requests fail now.
                await read_writer.aclose()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_stdout)
                tg.start_soon(read_stderr)
                tg.start_soon(write_stdin)
                try:
                    yield read_stream, write_stream
                finally:
                    self._stopping = True
                    # Shielded: a cancelled owner must still stop and reap the server.
                    with anyio.CancelScope(shield=True):
                        await write_stream.aclose()
                        await self._stop(process)
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for stream in (read_stream, write_reader, read_writer):
                    await stream.aclose()

    async def _stop(self, process: anyio.abc.Process) -> None:
        pgid = process.pid
        assert process.stdin is not None
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
        if not await _wait_exit(process, self.stop_grace_s):
            logger.info("MCP server %s (pid %d) ignored stdin EOF; terminating", self.label, pgid)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            await _wait_exit(process, self.term_grace_s)
        # Whatever is left of the group (the leader if it ignored SIGTERM, or
        # grandchildren it left behind) is killed outright.
        if not await _wait_group_gone(pgid, 0.0 if process.returncode is None else 0.05):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            await _wait_exit(process, 2.0)
            await _wait_group_gone(pgid, 1.0)
        _live_groups.discard(pgid)
        self.returncode = process.returncode
        # Keep the last words of a server that died during start-up for the error.
        with anyio.move_on_after(0.2):
            await self._stderr_done.wait()
        self.exited.set()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.aclose()
        # The asyncio subprocess transport otherwise warns at GC; nothing public closes it.
        transport = getattr(getattr(process, "_process", None), "_transport", None)
        close = getattr(transport, "close", None)
        if callable(close):
            with suppress(PermissionError):
                close()
