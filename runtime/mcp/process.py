"""The stdio transport for MCP servers that run as child processes of the gateway.

The SDK's ``stdio_client`` does the same job but keeps the process to itself;
the gateway needs its pid (health, ``plugins list``), the tail of its stderr
(why did it die?), a prompt signal when it exits, and a registry of live
process groups so nothing is orphaned however the gateway stops. Framing and
the shutdown order follow the SDK: newline-delimited JSON-RPC; on close, stdin
is shut, the server gets a grace period, then its whole process group is sent
SIGTERM and finally SIGKILL.

Two things the SDK's transport does not do:

- The process itself is watched, not only its stdout: a server that dies while
  a child it started still holds the pipe open is noticed at once (a pidfd on
  Linux, polling elsewhere), and the session ends instead of every call running
  out its timeout.
- Every live process group is registered with a reaper process
  (:mod:`runtime.mcp.reaper`) that kills the groups if the gateway dies without
  closing them, SIGKILL included.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
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

from runtime.text import mask_credentials

logger = logging.getLogger("plugway.mcp.process")

# Beyond the SDK's allow-list (HOME, LOGNAME, PATH, SHELL, TERM, USER): locale and
# temp-dir settings change how a server behaves but carry no secrets.
_EXTRA_SAFE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

_STDERR_TAIL_LINES = 20
_POLL_S = 0.01

# Process groups of every child still alive, for last-resort reaping at exit.
_live_groups: set[int] = set()
_REAPER_SCRIPT = Path(__file__).with_name("reaper.py")


class _ReaperLink:
    """This gateway process's pipe to its reaper (:mod:`runtime.mcp.reaper`).

    Started with the first server; one per process (a forked child starts its
    own). If the reaper cannot be started or has died, servers still run: only
    the protection against the gateway dying outright is lost, and that is logged.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._process is not None and self._owner_pid == os.getpid() and self._process.poll() is None:
            return self._process
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-E", str(_REAPER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                # Its own session: a signal sent to the gateway's group leaves it alive to clean up.
                start_new_session=True,
            )
        except OSError as exc:
            logger.warning("cannot start the MCP reaper process (%s): servers may outlive a killed gateway", exc)
            self._process = None
            return None
        self._owner_pid = os.getpid()
        # Re-register what is already running (a reaper that died and was restarted).
        for pgid in _live_groups:
            self._send(self._process, f"+{pgid}")
        return self._process

    @staticmethod
    def _send(process: subprocess.Popen[bytes], line: str) -> bool:
        assert process.stdin is not None
        try:
            process.stdin.write(f"{line}\n".encode())
            process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def register(self, pgid: int) -> None:
        process = self._ensure()
        if process is not None and not self._send(process, f"+{pgid}"):
            # The reaper died: one more try with a fresh one.
            process = self._ensure()
            if process is not None:
                self._send(process, f"+{pgid}")

    def unregister(self, pgid: int) -> None:
        process = self._process
        if process is not None and self._owner_pid == os.getpid():
            self._send(process, f"-{pgid}")

    def close(self) -> None:
        """End the reaper after a clean stop (it finds nothing left to kill)."""
        process, self._process = self._process, None
        if process is None or self._owner_pid != os.getpid():
            return
        assert process.stdin is not None
        with suppress(OSError):
            process.stdin.close()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=3)


_reaper = _ReaperLink()


def _track_group(pgid: int) -> None:
    _live_groups.add(pgid)
    _reaper.register(pgid)


def _untrack_group(pgid: int) -> None:
    _live_groups.discard(pgid)
    _reaper.unregister(pgid)


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
        _untrack_group(pgid)
    return killed


def _at_exit() -> None:
    kill_all_process_groups()
    _reaper.close()


# Runs when the interpreter exits without the manager having been closed (an
# unhandled exception in the CLI, a test runner tearing down a loop): children
# must not outlive the gateway.
atexit.register(_at_exit)


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


async def _exited(process: anyio.abc.Process) -> None:
    """Returns once ``process`` has exited, whatever happens to its pipes."""
    fd: int | None = None
    with suppress(AttributeError, OSError):
        # Readable once the process exits: no polling while it runs (Linux 5.3+).
        fd = os.pidfd_open(process.pid)
    if fd is not None:
        try:
            await anyio.wait_readable(fd)
        finally:
            os.close(fd)
    # The event loop's child watcher records the exit status a moment later.
    while process.returncode is None:  # noqa: ASYNC110
        await anyio.sleep(_POLL_S if fd is not None else 0.1)


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
        self._exit_reported = False

    def exit_reason(self) -> str:
        code = self.returncode
        if code is None:
            reason = "server process closed its output"
        elif code < 0:
            reason = f"server process was killed by signal {-code}"
        else:
            reason = f"server process exited with code {code}"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), None)
        # Whatever a server prints may hold a connection string: the reason reaches logs, health and the model.
        return f"{reason} (last stderr line: {mask_credentials(last.strip())[:300]})" if last else reason

    @asynccontextmanager
    async def open(
        self,
    ) -> AsyncIterator[
        tuple[
            anyio.streams.memory.MemoryObjectReceiveStream[SessionMessage | Exception],
            anyio.streams.memory.MemoryObjectSendStream[SessionMessage],
        ]
    ]:
        executable = self.command[0]
        if os.sep not in executable and shutil.which(executable, path=self.env.get("PATH")) is None:
            raise FileNotFoundError(errno.ENOENT, "command not found", executable)
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
        _track_group(process.pid)
        read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
        log = logging.getLogger(f"plugway.mcp.server.{self.label}")

        def report_exit() -> None:
            # Reached from the end of stdout or from the process watch, whichever comes first.
            if self._stopping or self._exit_reported:
                return
            self._exit_reported = True
            self.returncode = process.returncode
            self.exited.set()
            if self.on_exit is not None:
                self.on_exit(self.exit_reason())

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
                report_exit()

        async def watch_process() -> None:
            await _exited(process)
            if self._stopping:
                return
            # Normally stdout ends too and read_stdout reports; a child of the server
            # may still hold the pipes open, so do not wait on them for long.
            with anyio.move_on_after(0.5):
                await self._stderr_done.wait()
            report_exit()
            # Ends the session: pending requests fail now instead of at their timeout.
            await read_writer.aclose()

        async def read_stderr() -> None:
            assert process.stderr is not None
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                buffer = ""
                async for chunk in TextReceiveStream(process.stderr, errors="replace"):
                    lines = (buffer + chunk).split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        self.stderr_tail.append(line)
                        log.debug("%s", mask_credentials(line))
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
                tg.start_soon(watch_process)
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
        _untrack_group(pgid)
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
