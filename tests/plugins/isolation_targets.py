"""Functions run by the isolation tests inside worker processes (they must be importable by name)."""

from __future__ import annotations

import os
from pathlib import Path

from runtime import ToolError


def worker_pid() -> int:
    return os.getpid()


def add(left: int, right: int) -> int:
    return left + right


def refuse(message: str) -> None:
    raise ToolError(message)


def spin_forever(pid_file: str) -> None:
    """A runaway pure-Python computation: announces its pid, then never returns."""
    Path(pid_file).write_text(str(os.getpid()))
    counter = 0
    while True:
        counter += 1


def allocate(size: int) -> int:
    return len(bytearray(size))


def die(code: int) -> None:
    os._exit(code)


def time_out() -> None:
    raise TimeoutError("the upstream service did not answer")
